"""`taskexec db backup` / `restore`: real pg_dump and pg_restore against a real PostgreSQL database."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from commands.backup import BackupError, backup, libpq_target, list_backups, prune
from tests import support
from tests.api_helpers import API, APPROVE, count, create_definition, sql, submit
from tests.support import ROOT, taskexec


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(taskexec(*args), env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_libpq_target_keeps_the_password_off_the_command_line() -> None:
    url, env = libpq_target("postgresql+psycopg://tasks:p%40ss@db.example:5433/tasks?sslmode=require")
    assert url == "postgresql://tasks@db.example:5433/tasks?sslmode=require"
    assert env == {"PGPASSWORD": "p@ss"}
    assert libpq_target("postgres://u@h/d") == ("postgresql://u@h/d", {})
    with pytest.raises(BackupError, match="PostgreSQL"):
        libpq_target("mysql://u@h/tasks")


def test_backup_then_restore_round_trip(env: dict[str, str], client: Any, admin: dict[str, str],
                                        database: str, tmp_path: Path) -> None:
    create_definition(client, admin)
    create_definition(client, admin, APPROVE)
    kept = [submit(client, admin, input={"name": f"n{i}"}) for i in range(3)]
    manual = submit(client, admin, "approve-order", input={})

    out = run(env, "db", "backup", "--dir", str(tmp_path))
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    dump = Path(report["backup"])
    assert dump.parent == tmp_path and dump.is_file() and report["sizeBytes"] == dump.stat().st_size > 0
    assert dump.read_bytes()[:5] == b"PGDMP"  # pg_dump's custom format
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]

    # Disaster: a task submitted after the backup, then most of the data lost.
    later = submit(client, admin, input={"name": "after the backup"})
    sql(database, "TRUNCATE task_instances, task_events, outbox CASCADE")
    sql(database, "DELETE FROM task_definitions WHERE id = 'approve-order'")
    assert client.get(f"{API}/tasks/{kept[0]}", headers=admin).status_code == 404

    out = run(env, "db", "restore", str(dump))
    assert out.returncode == 0, out.stderr
    for task_id in [*kept, manual]:
        r = client.get(f"{API}/tasks/{task_id}", headers=admin)
        assert r.status_code == 200, r.json
    assert client.get(f"{API}/tasks/{kept[1]}", headers=admin).json["input"] == {"name": "n1"}
    assert client.get(f"{API}/tasks/{later}", headers=admin).status_code == 404
    assert client.get(f"{API}/tasks/definitions/approve-order", headers=admin).status_code == 200
    assert count(database, "task_events") > 0
    # the restored database still takes new work
    assert client.get(f"{API}/tasks/{submit(client, admin)}", headers=admin).status_code == 200


def test_restore_into_an_empty_database(env: dict[str, str], client: Any, admin: dict[str, str],
                                        tmp_path: Path) -> None:
    create_definition(client, admin)
    task_id = submit(client, admin)
    report = json.loads(run(env, "db", "backup", "--dir", str(tmp_path)).stdout)
    fresh = "t_" + uuid.uuid4().hex[:12]
    with support.admin_conn() as conn:
        conn.execute(f"CREATE DATABASE {fresh}")
    try:
        out = run({**env, "DATABASE_URL": support.db_url(fresh)}, "db", "restore", report["backup"])
        assert out.returncode == 0, out.stderr
        assert sql(fresh, "SELECT id::text FROM task_instances") == [(task_id,)]
        assert sql(fresh, "SELECT count(*) FROM alembic_version")[0][0] == 1
    finally:
        support.drop_database(fresh)


def test_restore_of_a_missing_or_broken_file_fails_cleanly(env: dict[str, str], tmp_path: Path) -> None:
    out = run(env, "db", "restore", str(tmp_path / "nope.dump"))
    assert out.returncode != 0 and "no such backup file" in out.stderr
    broken = tmp_path / "taskexec-broken.dump"
    broken.write_bytes(b"not a dump")
    out = run(env, "db", "restore", str(broken))
    assert out.returncode != 0 and "pg_restore failed" in out.stderr


def _aged(directory: Path, name: str, days: float) -> Path:
    path = directory / name
    path.write_bytes(b"PGDMP old")
    stamp = time.time() - days * 86400
    os.utime(path, (stamp, stamp))
    return path


def test_backup_prunes_backups_older_than_the_retention(env: dict[str, str], tmp_path: Path) -> None:
    ancient = _aged(tmp_path, "taskexec-tasks-20200101T000000000000Z.dump", 45)
    old = _aged(tmp_path, "taskexec-tasks-20200201T000000000000Z.dump", 31)
    recent = _aged(tmp_path, "taskexec-tasks-20200301T000000000000Z.dump", 29)
    unrelated = _aged(tmp_path, "notes.txt", 400)
    # the default retention comes from TEL_BACKUP_RETENTION_DAYS (30 unless set)
    out = run({**env, "TEL_BACKUP_DIR": str(tmp_path)}, "db", "backup")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert sorted(report["pruned"]) == sorted([str(ancient), str(old)])
    assert not ancient.exists() and not old.exists()
    assert recent.exists() and unrelated.exists() and Path(report["backup"]).exists()

    out = run({**env, "TEL_BACKUP_RETENTION_DAYS": "7"}, "db", "backup", "--dir", str(tmp_path))
    assert json.loads(out.stdout)["pruned"] == [str(recent)]
    out = run(env, "db", "backup", "--dir", str(tmp_path), "--retention-days", "0")  # 0 keeps everything
    assert json.loads(out.stdout)["pruned"] == [] and len(list_backups(tmp_path)) == 3


def test_prune_always_keeps_the_newest_backup(tmp_path: Path) -> None:
    only = _aged(tmp_path, "taskexec-tasks-20200101T000000000000Z.dump", 90)
    older = _aged(tmp_path, "taskexec-tasks-20191201T000000000000Z.dump", 120)
    assert prune(tmp_path, 30) == [older]
    assert only.exists()


def test_backup_function_writes_into_a_new_directory(database: str, tmp_path: Path) -> None:
    target = tmp_path / "nested" / "dir"
    res = backup(support.db_url(database), target, retention_days=30)
    assert res.path.parent == target and res.path.name.startswith(f"taskexec-{database}-")
    assert res.pruned == []
