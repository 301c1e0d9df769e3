"""The schema Alembic migrates to is exactly the one the SQLAlchemy models describe."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from taskexec.store.models import Base
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

    from taskexec.store import migrate

    engine = create_engine(support.db_url(database))
    try:
        with engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_heads()
    finally:
        engine.dispose()
    script = ScriptDirectory.from_config(migrate.alembic_config(support.db_url(database)))
    assert set(current) == set(script.get_heads())


def test_the_api_key_notify_trigger_migrates_down_and_up(database: str) -> None:
    """Migration 0007 (the NOTIFY behind the router's cache of verified API keys) has a working downgrade."""
    from alembic import command

    from taskexec.store import migrate
    from tests.api_helpers import sql

    def trigger() -> list[tuple[Any, ...]]:
        return sql(database, "SELECT tgname FROM pg_trigger WHERE tgname = 'api_keys_changed'")

    assert trigger() == [("api_keys_changed",)]
    command.downgrade(migrate.alembic_config(support.db_url(database)), "0006")
    assert trigger() == [] and sql(database, "SELECT 1 FROM pg_proc WHERE proname = 'taskexec_api_keys_changed'") == []
    migrate.upgrade(support.db_url(database))
    assert trigger() == [("api_keys_changed",)]
