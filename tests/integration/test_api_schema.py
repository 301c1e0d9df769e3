"""The schema Alembic migrates to is exactly the one the SQLAlchemy models describe."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from taskexec.models import Base
from tests import support


def test_migrated_schema_equals_models(database: str) -> None:
    engine = create_engine(support.db_url(database))
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(
                conn, opts={"compare_type": True, "compare_server_default": False}
            )
            diffs: list[Any] = compare_metadata(ctx, Base.metadata)
    finally:
        engine.dispose()
    assert diffs == [], "\n".join(map(str, diffs))


def test_alembic_is_at_head(database: str) -> None:
    from alembic.script import ScriptDirectory

    from taskexec import migrate

    engine = create_engine(support.db_url(database))
    try:
        with engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_heads()
    finally:
        engine.dispose()
    script = ScriptDirectory.from_config(migrate.alembic_config(support.db_url(database)))
    assert set(current) == set(script.get_heads())
