"""Database backups: `pg_dump -Fc` / `pg_restore` against the task database, with retention pruning.

Backups are PostgreSQL custom-format archives named `taskexec-<db>-<UTC timestamp>.dump`, written
under a temporary name and renamed when complete, so a crash never leaves a truncated file that
looks like a good backup. The password never appears on a command line (it goes in `PGPASSWORD`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.engine import URL, make_url

PREFIX = "taskexec-"
SUFFIX = ".dump"
DAY_S = 86400.0


class BackupError(RuntimeError):
    """A backup or restore could not be carried out; the message says why."""


@dataclass
class BackupResult:
    """What `backup` wrote and what it pruned."""

    path: Path
    size_bytes: int
    pruned: list[Path] = field(default_factory=list)


def libpq_target(database_url: str) -> tuple[str, dict[str, str]]:
    """A libpq connection URL without the password, and the environment that carries it.

    Accepts the SQLAlchemy form (`postgresql+psycopg://...`) as well as plain `postgres(ql)://`.
    """
    if database_url.startswith("postgres://"):
        database_url = "postgresql://" + database_url[len("postgres://"):]
    try:
        url = make_url(database_url)
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy raises ArgumentError or ValueError
        raise BackupError(f"DATABASE_URL is not a valid URL: {exc}") from None
    if url.get_backend_name() != "postgresql":
        raise BackupError("backups need PostgreSQL: DATABASE_URL is not a postgresql:// URL")
    if not url.database:
        raise BackupError("DATABASE_URL names no database")
    env: dict[str, str] = {}
    if url.password is not None:
        env["PGPASSWORD"] = str(url.password)
    bare = URL.create("postgresql", username=url.username, host=url.host, port=url.port,
                      database=url.database, query=url.query)  # URL.set() cannot unset a password
    return bare.render_as_string(hide_password=False), env


def _binary(name: str) -> str:
    path = shutil.which(name)
    if not path:
        raise BackupError(f"{name} not found on PATH (Debian: apt-get install postgresql-client)")
    return path


def _run(argv: list[str], extra_env: dict[str, str]) -> None:
    env = {**os.environ, **extra_env}
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tool = os.path.basename(argv[0])
        raise BackupError(f"{tool} failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")


def backup_name(database: str, now: datetime | None = None) -> str:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S%fZ")
    return f"{PREFIX}{database}-{stamp}{SUFFIX}"


def backup(database_url: str, directory: str | Path, retention_days: int = 30) -> BackupResult:
    """Dump the database into `directory`, then prune backups older than `retention_days` (0: keep all)."""
    target, env = libpq_target(database_url)
    database = make_url(target).database or "db"
    out_dir = Path(directory).absolute()
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / backup_name(database)
    partial = final.with_name("." + final.name + ".partial")
    try:
        _run([_binary("pg_dump"), "--format=custom", "--no-owner", "--no-privileges",
              f"--file={partial}", f"--dbname={target}"], env)
        os.replace(partial, final)
    finally:
        partial.unlink(missing_ok=True)
    pruned = prune(out_dir, retention_days, keep=final) if retention_days > 0 else []
    return BackupResult(path=final, size_bytes=final.stat().st_size, pruned=pruned)


def list_backups(directory: str | Path) -> list[Path]:
    """Completed backups in `directory`, oldest first (by modification time)."""
    d = Path(directory)
    if not d.is_dir():
        return []
    files = [p for p in d.iterdir() if p.is_file() and p.name.startswith(PREFIX) and p.name.endswith(SUFFIX)]
    return sorted(files, key=lambda p: p.stat().st_mtime)


def prune(directory: str | Path, retention_days: int, keep: Path | None = None,
          now: float | None = None) -> list[Path]:
    """Delete backups whose mtime is older than `retention_days`; the newest backup always stays."""
    if retention_days <= 0:
        return []
    backups = list_backups(directory)
    if not backups:
        return []
    newest = backups[-1]
    cutoff = (now if now is not None else time.time()) - retention_days * DAY_S
    removed: list[Path] = []
    for path in backups:
        if path in (newest, keep):
            continue
        if path.stat().st_mtime < cutoff:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def restore(database_url: str, file: str | Path) -> None:
    """Restore a backup into the database: objects in the archive are dropped and recreated, in one
    transaction (a failure leaves the database as it was). Stop the router and the pools first."""
    path = Path(file)
    if not path.is_file():
        raise BackupError(f"no such backup file: {path}")
    target, env = libpq_target(database_url)
    _run([_binary("pg_restore"), "--clean", "--if-exists", "--no-owner", "--no-privileges",
          "--single-transaction", "--exit-on-error", f"--dbname={target}", str(path)], env)
