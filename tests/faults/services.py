"""Private, restartable Redis and PostgreSQL instances for the fault tests.

The shared services (Redis :6379, PostgreSQL :55432) serve everybody's tests and must never be
restarted; each fault test that restarts a service gets its own instance on a free port, in its own
directory, and restarts it on the same port with the same data.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
import redis

from tests.support import free_port, wait_for


def _pg_bindir() -> Path | None:
    """initdb/pg_ctl: PATH first, then Debian's /usr/lib/postgresql/<major>/bin (as scripts/lib.sh)."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    dirs = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name)
                  if p.parent.name.isdigit() else 0)
    return next((d for d in reversed(dirs) if (d / "initdb").exists()), None)


PG_BIN = _pg_bindir()


class RedisServer:
    """A redis-server child process with AOF persistence; `restart()` keeps its port and data."""

    def __init__(self, base: Path, appendfsync: str = "everysec") -> None:
        self.dir = base / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.appendfsync = appendfsync
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.popen: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    def start(self) -> None:
        assert shutil.which("redis-server"), "redis-server missing: run scripts/bootstrap.sh"
        args = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.dir),
                "--appendonly", "yes", "--appendfsync", self.appendfsync, "--save", "",
                "--daemonize", "no", "--logfile", str(self.dir / "redis.log")]
        self.popen = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        wait_for(self.up, 20, what=f"private redis on :{self.port}")

    def up(self) -> bool:
        if self.popen is None or self.popen.poll() is not None:
            return False
        try:
            with self.client() as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def client(self) -> redis.Redis:
        """A new client: close it (`with private_redis.client() as r:`), not the garbage collector."""
        return redis.Redis(port=self.port, socket_timeout=2, socket_connect_timeout=2)

    def queued(self, queue: str) -> int:
        """Messages waiting on a kombu queue (one Redis list per priority step)."""
        with self.client() as client:
            names: list[bytes] = client.keys(f"{queue}*")  # type: ignore[assignment]
            lengths: list[int] = [client.llen(name) for name in names]  # type: ignore[misc]
        return sum(lengths)

    def drop_queue(self, queue: str) -> int:
        """Delete a kombu queue's lists: its messages are gone as after a crash that lost them."""
        with self.client() as client:
            names: list[bytes] = client.keys(f"{queue}*")  # type: ignore[assignment]
            return int(client.delete(*names)) if names else 0  # type: ignore[arg-type]

    def stop(self, hard: bool = False) -> None:
        """SHUTDOWN (the AOF is flushed) or, with `hard`, SIGKILL (only what was fsynced survives)."""
        if self.popen is None or self.popen.poll() is not None:
            return
        if hard:
            self.popen.kill()
        else:
            with contextlib.suppress(redis.RedisError), self.client() as client:
                client.shutdown()
        try:
            self.popen.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()

    def restart(self, hard: bool = False, down_for: float = 0.0) -> None:
        self.stop(hard=hard)
        time.sleep(down_for)
        self.start()
        self.restarts += 1

    def log(self) -> str:
        path = self.dir / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _pg_user() -> str:
    """PostgreSQL refuses to run as root: the cluster belongs to an unprivileged user (as scripts/services.sh)."""
    if os.getuid() != 0:
        return pwd.getpwuid(os.getuid()).pw_name
    for name in ("postgres", "taskexec"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise AssertionError("running as root and no 'postgres' or 'taskexec' OS user to own a PostgreSQL cluster")


class PostgresCluster:
    """A private PostgreSQL cluster (initdb + pg_ctl) on a free port; `restart()` keeps port and data.

    Durability as in production for what matters here (`synchronous_commit` on: an acknowledged commit
    survives `-m immediate`); `fsync=off` only spares the disk, the machine itself does not crash.
    """

    def __init__(self, options: str = "") -> None:
        assert PG_BIN is not None, "PostgreSQL server binaries missing: run scripts/bootstrap.sh"
        self.options = options  # extra `-c name=value` server settings (e.g. ssl=on)
        self.bin: Path = PG_BIN
        self.user = _pg_user()
        # /var/tmp: every parent must be traversable by the cluster's owner (pytest's tmp_path is not)
        self.base = Path(tempfile.mkdtemp(prefix="tel-faults-pg-", dir="/var/tmp"))
        self.data = self.base / "data"
        self.sock = self.base / "sock"
        self.logfile = self.base / "postgres.log"
        self.port = free_port()
        os.chmod(self.base, 0o755)
        self.sock.mkdir()
        self.logfile.touch()
        if os.getuid() == 0:
            entry = pwd.getpwnam(self.user)
            for path in (self.base, self.sock, self.logfile):
                os.chown(path, entry.pw_uid, entry.pw_gid)

    def chown(self, *paths: Path) -> None:
        """Give files to the cluster's owner (PostgreSQL refuses a key file it does not own)."""
        if os.getuid() == 0:
            entry = pwd.getpwnam(self.user)
            for path in paths:
                os.chown(path, entry.pw_uid, entry.pw_gid)

    def _as_pg(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        cmd = list(args)
        if os.getuid() == 0:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, cwd=self.base)

    def init(self) -> None:
        r = self._as_pg(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                        "-E", "UTF8", "--locale=C.UTF-8")
        assert r.returncode == 0, r.stdout + r.stderr

    def start(self) -> None:
        opts = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.sock} -c fsync=off "
                f"-c full_page_writes=off -c max_connections=100 {self.options}").strip()
        r = self._as_pg(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.logfile), "-o", opts,
                        "-w", "-t", "60", "start")
        assert r.returncode == 0, r.stdout + r.stderr + self.log()[-2000:]
        wait_for(self.up, 30, what=f"private postgres on :{self.port}")

    def stop(self, mode: str = "fast") -> None:
        """`fast`: roll back open transactions and disconnect; `immediate`: like a crash (recovery on start)."""
        if not (self.data / "postmaster.pid").exists():
            return
        r = self._as_pg(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")
        assert r.returncode == 0, r.stdout + r.stderr

    def restart(self, mode: str = "fast", down_for: float = 0.0) -> None:
        self.stop(mode)
        time.sleep(down_for)
        self.start()

    def up(self) -> bool:
        try:
            with psycopg.connect(dbname="postgres", user="postgres", host=str(self.sock), port=self.port,
                                 connect_timeout=2) as conn:  # the socket: TCP may need TLS and a password
                conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    def admin(self) -> psycopg.Connection:
        """A superuser connection over the cluster's Unix socket (trust)."""
        return psycopg.connect(dbname="postgres", user="postgres", host=str(self.sock), port=self.port,
                               autocommit=True)

    def libpq(self, db: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def url(self, db: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{db}"

    def create_database(self, name: str) -> str:
        """A new database with the project's schema (Alembic, as `taskexec migrate`); returns its URL."""
        from taskexec.store.migrate import upgrade

        with self.admin() as conn:
            conn.execute(f"CREATE DATABASE {name}")
        upgrade(self.url(name))
        return self.url(name)

    def log(self) -> str:
        return self.logfile.read_text(errors="replace") if self.logfile.exists() else ""

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)
