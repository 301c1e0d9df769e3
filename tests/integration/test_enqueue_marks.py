"""The router's enqueue marks on a real PostgreSQL: held a moment, then written in one statement for the tasks
still PENDING; a task that has started gets no mark, and no new row version."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from taskexec.core.config import Settings
from taskexec.services.dispatch import EnqueueMarks
from taskexec.store.db import Database
from tests.api_helpers import create_definition, sql, submit


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    d = Database(settings.database_url)
    yield d
    d.dispose()


def test_marks_are_held_then_written_for_pending_tasks_only(
    client: Any, admin: dict[str, str], database: str, db: Database
) -> None:
    create_definition(client, admin)
    waiting, started = submit(client, admin), submit(client, admin)
    # as just published by a router with a dispatcher: no mark yet; one of them already started by a pool
    sql(database, "UPDATE task_instances SET enqueued_at = NULL")
    sql(database, "UPDATE task_instances SET status = 'RUNNING' WHERE id = %s", started)
    tokens = dict(sql(database, "SELECT id, dispatch_token FROM task_instances"))
    version_of_started = sql(database, "SELECT xmin::text FROM task_instances WHERE id = %s", started)

    marks = EnqueueMarks(hold_s=60)
    marks.add([(waiting, tokens[waiting]), (started, tokens[started])])
    assert marks.flush(db) == 0 and marks.pending(), "held: not written before hold_s"
    assert sql(database, "SELECT count(enqueued_at) FROM task_instances") == [(0,)]

    assert marks.flush(db, everything=True) == 2 and not marks.pending()
    marked = dict(sql(database, "SELECT id, enqueued_at IS NOT NULL FROM task_instances"))
    assert marked == {waiting: True, started: False}
    assert sql(database, "SELECT xmin::text FROM task_instances WHERE id = %s", started) == version_of_started

    stale = submit(client, admin)  # a mark with an old dispatch token (the task was queued again) is ignored
    sql(database, "UPDATE task_instances SET enqueued_at = NULL WHERE id = %s", stale)
    now = EnqueueMarks(hold_s=0)
    now.add([(stale, "an-earlier-token")])
    assert now.flush(db) == 1
    assert sql(database, "SELECT enqueued_at FROM task_instances WHERE id = %s", stale) == [(None,)]
