"""TLS in transit: the database with `sslmode=verify-full`, and the router serving HTTPS (TLS 1.2 minimum).

The database is a PRIVATE PostgreSQL cluster (tests/faults/services.py) started with `ssl=on`, a server
certificate from a CA this test generates (trustme), and a pg_hba.conf that only admits TLS
connections with a password (`hostssl ... scram-sha-256`), so a plain connection is refused and every
connection below is encrypted. The shared PostgreSQL is never touched. The router, `taskexec migrate`,
`taskexec db backup` and `restore` run as real processes; a certificate from another CA is refused.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
import trustme
from requests.adapters import HTTPAdapter

from tests.faults.services import PostgresCluster
from tests.support import JWT_SECRET, ROOT, Proc, free_port, taskexec, wait_for

pytestmark = pytest.mark.slow
DB_PASSWORD = "tls-db-password-" + uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def tls_pg(ca: trustme.CA) -> Iterator[PostgresCluster]:
    cluster = PostgresCluster(options="-c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key "
                              "-c ssl_min_protocol_version=TLSv1.2 -c password_encryption=scram-sha-256")
    try:
        cluster.init()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        crt, key = cluster.data / "server.crt", cluster.data / "server.key"
        cert.cert_chain_pems[0].write_to_path(str(crt))
        cert.private_key_pem.write_to_path(str(key))
        key.chmod(0o600)
        cluster.chown(crt, key)
        # TCP only with TLS and a password; the Unix socket (the test's own admin connection) trusts
        (cluster.data / "pg_hba.conf").write_text("local all all trust\n"
                                                  "hostssl all all 127.0.0.1/32 scram-sha-256\n")
        cluster.start()
        with cluster.admin() as conn:
            conn.execute(f"ALTER ROLE postgres PASSWORD '{DB_PASSWORD}'")
            conn.execute("CREATE DATABASE tasks")
        yield cluster
    finally:
        cluster.destroy()


def db_env(cluster: PostgresCluster, root_cert: Path, secrets: Path) -> dict[str, str]:
    """Router/migrate/backup settings: the URL names the CA, the password comes from a file."""
    (secrets / "dbpass").write_text(DB_PASSWORD + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEL_") and k != "DATABASE_URL"}
    env.update({
        "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{cluster.port}/tasks"
                        f"?sslmode=verify-full&sslrootcert={root_cert}",
        "TEL_DATABASE_PASSWORD_FILE": str(secrets / "dbpass"),
        "TEL_JWT_SECRET": JWT_SECRET,
        "CELERY_BROKER_URL": "memory://",
        "TEL_OUTBOX_THREAD": "false",
    })
    return env


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(taskexec(*args), env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)


def test_database_over_verified_tls_for_router_migrations_backup_and_restore(
        tls_pg: PostgresCluster, ca: trustme.CA, tmp_path: Path) -> None:
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    env = db_env(tls_pg, ca_file, tmp_path)
    plain = f"postgresql://postgres:{DB_PASSWORD}@127.0.0.1:{tls_pg.port}/tasks"
    with pytest.raises(psycopg.OperationalError, match="no pg_hba.conf entry|SSL off"):
        psycopg.connect(plain + "?sslmode=disable", connect_timeout=5)  # the server admits only TLS

    out = run(env, "migrate")
    assert out.returncode == 0, out.stderr

    port = free_port()
    router = Proc(taskexec("router"), {**env, "TEL_PORT": str(port)}, tmp_path / "router.log")
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _get(url + "/ready") == 200, 60, what="router ready over a TLS database connection")
        token = _admin_token()
        headers = {"Authorization": f"Bearer {token}"}
        definition = {"id": "tls-check", "name": "TLS", "type": "MANUAL",
                      "executionConfig": {"assignment": {"role": "ops"}}}
        r = requests.post(url + "/api/v1/tasks/definitions", json=definition, headers=headers, timeout=10)
        assert r.status_code == 201, r.text
        task = requests.post(url + "/api/v1/tasks", json={"taskDefinitionId": "tls-check", "input": {}},
                             headers=headers, timeout=10).json()["id"]
    finally:
        router.stop()
    assert "sslmode" not in router.text() and DB_PASSWORD not in router.text()
    with psycopg.connect(plain + f"?sslmode=verify-full&sslrootcert={ca_file}") as conn:
        row = conn.execute("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
        assert row is not None and row[0] is True and row[1] in ("TLSv1.2", "TLSv1.3")

    out = run(env, "db", "backup", "--dir", str(tmp_path / "backups"))
    assert out.returncode == 0, out.stderr
    dump = json.loads(out.stdout)["backup"]
    with psycopg.connect(plain + f"?sslmode=verify-full&sslrootcert={ca_file}", autocommit=True) as conn:
        conn.execute("TRUNCATE task_instances CASCADE")
    out = run(env, "db", "restore", dump)
    assert out.returncode == 0, out.stderr
    with psycopg.connect(plain + f"?sslmode=verify-full&sslrootcert={ca_file}") as conn:
        assert conn.execute("SELECT id::text FROM task_instances").fetchall() == [(task,)]

    # A server certificate the configured CA did not sign is refused by every client (as after a
    # man-in-the-middle), and so is one that names another host.
    wrong = tmp_path / "wrong-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(wrong))
    bad = db_env(tls_pg, wrong, tmp_path)
    for args in (("migrate",), ("db", "backup", "--dir", str(tmp_path / "nope"))):  # psycopg, and libpq's pg_dump
        out = run(bad, *args)
        assert out.returncode != 0 and "certificate verify failed" in out.stderr, (args, out.stderr[-1000:])
    other_host = db_env(tls_pg, ca_file, tmp_path)  # the right CA, but the certificate names another host
    other_host["DATABASE_URL"] = (f"postgresql://postgres@db.invalid:{tls_pg.port}/tasks?hostaddr=127.0.0.1"
                                  f"&sslmode=verify-full&sslrootcert={ca_file}")
    out = run(other_host, "migrate")
    assert out.returncode != 0 and "does not match host name" in out.stderr, out.stderr[-1000:]


def _get(url: str, **kw: Any) -> int:
    try:
        return requests.get(url, timeout=3, **kw).status_code
    except requests.RequestException:
        return 0


def _admin_token() -> str:
    from taskexec.core.config import Settings
    from taskexec.store.auth import issue_token

    return issue_token(Settings(TEL_JWT_SECRET=JWT_SECRET), "admin", ["admin"])  # type: ignore[call-arg]


class _Versions(HTTPAdapter):
    """A requests adapter whose TLS client offers exactly one protocol version."""

    def __init__(self, version: ssl.TLSVersion, ca_file: str) -> None:
        self.version, self.ca_file = version, ca_file
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        ctx = ssl.create_default_context(cafile=self.ca_file)
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let OpenSSL 3 offer TLS 1.1 at all: the server must refuse it
        ctx.minimum_version = ctx.maximum_version = self.version
        kwargs["ssl_context"] = ctx
        super().init_poolmanager(*args, **kwargs)


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_router_serves_https_with_tls_1_2_at_least(ca: trustme.CA, env: dict[str, str], tmp_path: Path) -> None:
    cert = ca.issue_cert("127.0.0.1")
    crt, key, ca_file = tmp_path / "router.crt", tmp_path / "router.key", tmp_path / "ca.pem"
    cert.cert_chain_pems[0].write_to_path(str(crt))
    cert.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_file))
    port = free_port()
    router = Proc(taskexec("router"), {**env, "TEL_PORT": str(port), "TEL_TLS_CERT_FILE": str(crt),
                                       "TEL_TLS_KEY_FILE": str(key), "TEL_OUTBOX_THREAD": "false"},
                  tmp_path / "router.log")
    url = f"https://127.0.0.1:{port}"
    try:
        wait_for(lambda: _get(url + "/health", verify=str(ca_file)) == 200, 60, what="router serving HTTPS")
        for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            with requests.Session() as session:
                session.mount("https://", _Versions(version, str(ca_file)))
                assert session.get(url + "/health", timeout=5).status_code == 200, version
        with requests.Session() as old, pytest.raises(requests.exceptions.SSLError) as refused:
            old.mount("https://", _Versions(ssl.TLSVersion.TLSv1_1, str(ca_file)))
            old.get(url + "/health", timeout=5)
        # the server's alert, not a client that never sent a TLS 1.1 hello
        assert "protocol version" in str(refused.value).lower(), refused.value
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/health", timeout=5)  # plain HTTP is not served
        hc = subprocess.run(["python3", str(ROOT / "scripts" / "healthcheck.py")], capture_output=True, text=True,
                            env={"TEL_PORT": str(port), "TEL_TLS_CERT_FILE": str(crt), "PATH": os.environ["PATH"]})
        assert hc.returncode == 0, hc.stderr  # the image's HEALTHCHECK follows the router to HTTPS
    finally:
        router.stop()
