"""The connector: engine and sessions on PostgreSQL. Only the router process ever opens one."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, String, cast, create_engine, event, literal, text
from sqlalchemy.dialects.postgresql import JSONB, array
from sqlalchemy.exc import InterfaceError, InvalidatePoolError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from taskexec.core.exceptions import Unavailable

# A pooled connection idle for longer than this is pinged before use (one round trip); one in steady use
# under load is not. A connection broken within this window (a restart of PostgreSQL takes longer) fails
# its request with 503, and that invalidates the pool.
PING_IDLE_S = 0.25


class Database:
    """An engine plus a session factory; `session()` commits on success and rolls back on error."""

    def __init__(self, url: str, **engine_kwargs: Any) -> None:
        self.url = url
        engine_kwargs.setdefault("pool_size", 10)
        engine_kwargs.setdefault("max_overflow", 10)
        self.engine: Engine = create_engine(url, **engine_kwargs)
        if not engine_kwargs.get("pool_pre_ping"):
            _ping_when_idle(self.engine)
        self._factory = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        session = self._factory()
        try:
            yield session
            session.commit()
        except (OperationalError, InterfaceError) as exc:  # unreachable or lost database: 503, not 500
            _quiet_rollback(session)
            raise Unavailable("database unavailable", details={"error": type(exc.orig).__name__}) from exc
        except BaseException:
            _quiet_rollback(session)
            raise
        finally:
            session.close()

    @contextmanager
    def autocommit(self) -> Iterator[Connection]:
        """A connection for one statement that needs no transaction: no BEGIN/COMMIT round trips."""
        try:
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                yield conn
        except (OperationalError, InterfaceError) as exc:
            raise Unavailable("database unavailable", details={"error": type(exc.orig).__name__}) from exc

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A Core connection in one transaction, committed on success: the hot paths' statements, no ORM."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except (OperationalError, InterfaceError) as exc:
            raise Unavailable("database unavailable", details={"error": type(exc.orig).__name__}) from exc

    def ping(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except Exception:
            return False

    def dispose(self) -> None:
        self.engine.dispose()


def _ping_when_idle(engine: Engine) -> None:
    """Like `pool_pre_ping`, but only for connections that sat in the pool for PING_IDLE_S or more."""

    def stamp(_dbapi_conn: Any, record: Any, *_: Any) -> None:
        record.info["tel_idle_since"] = time.monotonic()

    def checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        if time.monotonic() - record.info.get("tel_idle_since", 0.0) < PING_IDLE_S:
            return
        try:
            alive = engine.dialect.do_ping(dbapi_conn)
        except Exception:
            alive = False
        if not alive:  # the pool drops every connection older than now and retries with a new one
            raise InvalidatePoolError()

    event.listen(engine, "connect", stamp)
    event.listen(engine, "checkin", stamp)
    event.listen(engine, "checkout", checkout)


def _quiet_rollback(session: Session) -> None:
    with contextlib.suppress(Exception):  # the connection may already be gone
        session.rollback()


def json_has_any(column: Any, values: list[str]) -> Any:
    """`column` (a JSONB list) contains any of `values` (the `?|` operator)."""
    values = list(dict.fromkeys(values))
    if not values:
        return literal(False)
    return cast(column, JSONB).has_any(array(values, type_=String))
