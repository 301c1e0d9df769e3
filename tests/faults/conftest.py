"""Fixtures of the fault tests: private Redis and PostgreSQL instances they may restart at will."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.services import PostgresCluster, RedisServer


@pytest.fixture
def private_redis(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[RedisServer]:
    """A redis-server of this test only (AOF on), on a free port; indirect parametrization may choose
    `appendfsync` (default `everysec`)."""
    server = RedisServer(tmp_path, appendfsync=getattr(request, "param", "everysec"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def pg_cluster() -> Iterator[PostgresCluster]:
    """A PostgreSQL cluster of this module only (initdb takes a few seconds), removed afterwards."""
    cluster = PostgresCluster()
    cluster.init()
    cluster.start()
    yield cluster
    cluster.destroy()


@pytest.fixture
def private_pg(pg_cluster: PostgresCluster) -> Iterator[tuple[PostgresCluster, str]]:
    """(cluster, URL of a fresh migrated database in it); the cluster is started again if a test left it down."""
    if not pg_cluster.up():
        pg_cluster.start()
    url = pg_cluster.create_database("f_" + uuid.uuid4().hex[:12])
    yield pg_cluster, url
    if not pg_cluster.up():
        pg_cluster.start()
