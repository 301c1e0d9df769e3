"""Schema migrations with Alembic, driven programmatically (`taskexec migrate`)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    """Roll the schema back to `revision` (an id, or `-1` for one step): run with the NEWER release's code,
    which knows how to undo its own migrations, before deploying the older release (docs/operations.md)."""
    command.downgrade(alembic_config(url), revision)


def current(url: str) -> str | None:
    """The database's revision (None before the first migration)."""
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine, pool

    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def revision(url: str, message: str) -> None:
    """Developer helper: autogenerate a new revision against the database at `url`."""
    command.revision(alembic_config(url), message=message, autogenerate=True)


def create_database_if_missing(url: str) -> bool:
    """Create the database `url` names when it does not exist (`taskexec up`); True if it was created.

    Asks the server's maintenance database `postgres` with the same credentials; safe to run twice, and
    when two run at once (the loser finds the database made by the other)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import DBAPIError
    from sqlalchemy.pool import NullPool

    target = make_url(url)
    name = target.database or ""
    engine = create_engine(target.set(database="postgres"), poolclass=NullPool,
                           connect_args={"connect_timeout": 5}, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            exists = conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name})
            if exists:
                return False
            quoted = engine.dialect.identifier_preparer.quote(name)
            try:
                conn.execute(text(f"CREATE DATABASE {quoted}"))
            except DBAPIError:
                if conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}):
                    return False  # created meanwhile by another `taskexec up`
                raise
            return True
    finally:
        engine.dispose()
