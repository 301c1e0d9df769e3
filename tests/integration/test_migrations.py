"""Rollback, tested: every migration's downgrade works on a database full of data, and upgrading again
restores the schema with the data in place. Generic over all revisions (a migration added later is
covered without touching this file); the semantic-version migration (0005) also gets its own checks.

The database is a clone of the session's template (migrated to head by Alembic); data is written
through the router's own API at head, then `taskexec migrate --downgrade -1` runs as a real process
step by step down to the first revision, and the data is compared after every step.
"""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
from alembic.script import ScriptDirectory

from taskexec.store.migrate import alembic_config, current, downgrade, upgrade
from tests import support
from tests.api_helpers import API, APPROVE, create_definition, definition, sql, submit
from tests.support import ROOT, taskexec

pytestmark = pytest.mark.slow


def revisions() -> list[str]:
    """Every revision, oldest first (a straight chain: merges are checked by Alembic itself)."""
    script = ScriptDirectory.from_config(alembic_config("postgresql://unused/db"))
    return [r.revision for r in reversed(list(script.walk_revisions()))]


def tables(database: str) -> dict[str, set[str]]:
    """Each table's column names."""
    rows = sql(database, "SELECT table_name, column_name FROM information_schema.columns "
                         "WHERE table_schema = 'public' AND table_name <> 'alembic_version'")
    out: dict[str, set[str]] = {}
    for table, column in rows:
        out.setdefault(table, set()).add(column)
    return out


def snapshot(database: str, schema: dict[str, set[str]] | None = None) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table (of `schema`'s tables and columns, if given), as text, without a
    definition's version (it changes type in 0005 and is checked on its own below), in a stable order."""
    out = {}
    for table, columns in tables(database).items():
        if schema is not None:
            if table not in schema:
                continue
            columns = columns & schema[table]
        cols = sorted(columns - {"version", "definition_version", "version_key"})
        quoted = ", ".join(f'"{c}"::text' for c in cols)
        out[table] = sorted(tuple(row) for row in sql(database, f"SELECT {quoted} FROM {table}"))
    return out


def migrate(database: str, *args: str) -> None:
    """`taskexec migrate` as an operator runs it (a real process)."""
    env = {**support.base_env(database, prefix="mig")}
    out = subprocess.run(taskexec("migrate", *args), env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]


def test_every_migration_rolls_back_one_step_and_forward_again_with_data(
        client: Any, admin: dict[str, str], app: Any, database: str) -> None:
    chain = revisions()
    assert chain[0] == "0001" and len(chain) >= 3
    # Data at head, through the API: definitions with several versions, tasks in several states, their
    # events and outbox rows, a dead letter.
    create_definition(client, admin)  # greet 1.0.0
    create_definition(client, admin, definition(version="1.2.0", name="Greet 1.2"))
    create_definition(client, admin, definition(id="plain", name="Plain"))  # plain 1.0.0
    create_definition(client, admin, definition(id="plain", name="Plain 2", version="2.0.0"))
    create_definition(client, admin, APPROVE)
    tasks = [submit(client, admin, input={"name": f"n{i}"}) for i in range(3)]
    tasks.append(submit(client, admin, "plain", input={"name": "p"}))
    tasks.append(submit(client, admin, "approve-order", input={}))
    assert client.post(f"{API}/tasks/{tasks[0]}/cancel", json={"reason": "rollback test"},
                       headers=admin).status_code == 200
    sql(database, "INSERT INTO dead_letters (id, task_id, queue, created_at) "
                  "VALUES (gen_random_uuid()::text, %s, 'q', now())", tasks[0])
    sql(database, "INSERT INTO outbox (event_id, task_id, target, url, body, attempts, next_attempt_at, created_at) "
                  "VALUES (gen_random_uuid()::text, %s, 'orchestrator', 'http://127.0.0.1:9/e', '{}', 0, now(), now())",
        tasks[1])
    app.extensions["taskexec"].db.dispose()  # no idle connection of the app during ALTER TABLE

    head, url = chain[-1], support.db_url(database)
    assert current(url) == head
    schema_at_head = tables(database)
    at_head = snapshot(database)
    assert all(at_head[t] for t in ("task_definitions", "task_instances", "task_events", "outbox", "dead_letters"))

    def at_head_within(schema: dict[str, set[str]]) -> dict[str, list[tuple[Any, ...]]]:
        """The rows at head, limited to the tables and columns an older `schema` has."""
        out = {}
        for table in schema_at_head.keys() & schema.keys():
            cols = sorted(schema_at_head[table] - {"version", "definition_version", "version_key"})
            keep = [i for i, c in enumerate(cols) if c in schema[table]]
            out[table] = sorted(tuple(row[i] for i in keep) for row in at_head[table])
        return out

    for index in range(len(chain) - 1, 0, -1):  # head -> ... -> 0001, one step at a time
        step, below = chain[index], chain[index - 1]
        before = snapshot(database)
        if index == len(chain) - 1:
            migrate(database, "--downgrade", "-1")  # the operator's command, once; in-process below (faster)
        else:
            downgrade(url, "-1")
        assert current(support.db_url(database)) == below, step
        after = snapshot(database)
        for table, rows in after.items():  # what the older schema still has keeps every row
            if table in before:
                assert len(rows) == len(before[table]), (step, table)
        assert {r for r in sql(database, "SELECT id::text FROM task_instances")} == {(t,) for t in tasks}, step

        lower = tables(database)
        upgrade(url)  # forward again to head: the data survived the round trip
        assert current(support.db_url(database)) == head, step
        # What the older schema kept is back as it was at head (a column or table the step dropped
        # comes back empty: the one loss a rollback implies, documented in docs/operations.md).
        assert snapshot(database, lower) == at_head_within(lower), step
        assert tables(database) == schema_at_head, step
        if index > 1:
            downgrade(url, below)  # continue one level lower for the next step
    # The first migration's downgrade empties the database; the chain then rebuilds it from nothing.
    downgrade(url, "base")
    assert current(url) is None and not tables(database)
    migrate(database)
    assert tables(database) == schema_at_head


def test_semantic_versions_become_integers_on_rollback_and_back(client: Any, admin: dict[str, str], app: Any,
                                                               database: str) -> None:
    """0005 down: "n.0.0" -> n; a definition with other versions is numbered 1, 2, ... in semantic order,
    and its tasks follow. Up again: n -> "n.0.0"."""
    create_definition(client, admin, definition(id="plain", name="P1"))  # 1.0.0
    create_definition(client, admin, definition(id="plain", name="P3", version="3.0.0"))
    create_definition(client, admin, definition(version="1.10.0", name="G10"))
    create_definition(client, admin, definition(version="1.9.0", name="G9"))
    plain_task = submit(client, admin, "plain", input={"name": "x"})
    greet_task = submit(client, admin, input={"name": "y"})  # runs greet 1.10.0, the latest
    app.extensions["taskexec"].db.dispose()
    migrate(database, "--downgrade", "0002")
    assert sorted(sql(database, "SELECT id, version, name FROM task_definitions")) == [
        ("greet", 1, "G9"), ("greet", 2, "G10"), ("plain", 1, "P1"), ("plain", 3, "P3")]
    assert sql(database, "SELECT definition_version FROM task_instances WHERE id = %s", plain_task) == [(3,)]
    assert sql(database, "SELECT definition_version FROM task_instances WHERE id = %s", greet_task) == [(2,)]
    upgrade(support.db_url(database))
    assert sorted(sql(database, "SELECT id, version, version_key FROM task_definitions")) == [
        ("greet", "1.0.0", "000000001.000000000.000000000"), ("greet", "2.0.0", "000000002.000000000.000000000"),
        ("plain", "1.0.0", "000000001.000000000.000000000"), ("plain", "3.0.0", "000000003.000000000.000000000")]
    assert sql(database, "SELECT definition_version FROM task_instances WHERE id = %s", greet_task) == [("2.0.0",)]
