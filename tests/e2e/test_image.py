"""The service image (Dockerfile), built here without a registry and run as the services it serves.

The base is `scripts/build-base-image.sh` (debootstrap, no registry); Docker's layer cache keeps
rebuilds short. The containers use the host's network to reach the test PostgreSQL and Redis on
127.0.0.1, like the router and worker processes of the other end-to-end tests.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import docker
import pytest
import requests
import yaml

from tests.e2e.helpers import ADMIN
from tests.manual_support import manual_def
from tests.support import JWT_SECRET, REDIS_URL, ROOT, admin_conn, db_url, drop_database, free_port, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.slow]
IMAGE = "taskexec:test"
BASE = "taskexec-base:bookworm"
MAX_IMAGE_BYTES = 350 * 10**6  # Debian + Python + PostgreSQL client (for `taskexec db backup`) + venv
LABEL = "taskexec.test-image"


@pytest.fixture(scope="module")
def image(docker_client: docker.DockerClient) -> Any:
    subprocess.run(["bash", "scripts/build-base-image.sh"], cwd=ROOT, check=True, timeout=1200)
    subprocess.run(["docker", "build", "-q", "--build-arg", f"BASE_IMAGE={BASE}", "-t", IMAGE, "."],
                   cwd=ROOT, check=True, timeout=1200, stdout=subprocess.DEVNULL)
    return docker_client.images.get(IMAGE)


@pytest.fixture
def containers(docker_client: docker.DockerClient) -> Iterator[list[Any]]:
    started: list[Any] = []
    yield started
    for cont in started:
        cont.remove(force=True)
    assert not docker_client.containers.list(all=True, sparse=True, filters={"label": LABEL})


def run(docker_client: docker.DockerClient, command: list[str] | None, env: dict[str, str], started: list[Any]) -> Any:
    cont = docker_client.containers.run(IMAGE, command, environment=env, network_mode="host", detach=True,
                                 labels={LABEL: "1"})
    started.append(cont)
    return cont


def check_health(cont: Any, url: str | None = None) -> None:
    """The image's own HEALTHCHECK command, run now instead of waiting for its interval (with the
    container's environment, plus `url` as TEL_HEALTHCHECK_URL when given)."""
    code, out = cont.exec_run(["python3", "/opt/taskexec/healthcheck.py"],
                              environment={"TEL_HEALTHCHECK_URL": url} if url else None)
    assert code == 0, out.decode(errors="replace")


@pytest.mark.timeout(1500)
def test_image_is_small_non_root_and_has_a_healthcheck(image: Any, docker_client: docker.DockerClient) -> None:
    cfg = image.attrs["Config"]
    assert cfg["User"] == "taskexec:taskexec"
    assert cfg["Healthcheck"]["Test"][-1] == "/opt/taskexec/healthcheck.py"
    assert cfg["Cmd"] == ["taskexec", "router"]
    assert image.attrs["Size"] < MAX_IMAGE_BYTES, f"image is {image.attrs['Size'] / 1e6:.0f} MB"
    out = docker_client.containers.run(IMAGE, ["sh", "-c", "id -u; ls /opt/venv/bin; pg_dump --version; "
                                        "taskexec --help"], remove=True).decode()
    uid, rest = out.split("\n", 1)
    assert uid == "10001"
    assert "taskexec" in rest and "pip" not in rest.split("pg_dump", 1)[0]  # no pip in the service venv
    assert "pg_dump (PostgreSQL) 15" in rest
    for command in ("router", "worker", "beat", "migrate", "token", "apikey", "sandbox", "db"):
        assert command in rest


@pytest.mark.timeout(1500)
def test_image_runs_migrate_router_and_a_worker_pool(image: Any, docker_client: docker.DockerClient,
                                                      containers: list[Any]) -> None:
    from taskexec.store.auth import create_api_key
    from taskexec.store.db import Database

    dbname = "img_" + uuid.uuid4().hex[:10]
    with admin_conn() as conn:
        conn.execute(f"CREATE DATABASE {dbname}")
    try:
        prefix = "img" + uuid.uuid4().hex[:8]
        port, worker_port = free_port(), free_port()
        common = {"CELERY_BROKER_URL": REDIS_URL, "LOG_LEVEL": "INFO",
                  **{f"TEL_QUEUE_{q}_NAME": f"{prefix}-{q.lower()}"
                     for q in ("AUTOMATED", "MANUAL", "INTEGRATION", "DEADLETTER")}}
        migrate = run(docker_client, ["taskexec", "migrate"], {"DATABASE_URL": db_url(dbname)}, containers)
        assert migrate.wait(timeout=120)["StatusCode"] == 0, migrate.logs().decode(errors="replace")

        db = Database(db_url(dbname))
        with db.session() as s:
            _, service_key = create_api_key(s, "image-test-workers", ["service"])
        db.dispose()

        router = run(docker_client, None, {**common, "DATABASE_URL": db_url(dbname), "TEL_JWT_SECRET": JWT_SECRET,
                                    "TEL_PORT": str(port)}, containers)
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            router.reload()
            assert router.status == "running", router.logs().decode(errors="replace")[-3000:]
            try:
                return requests.get(f"{url}/ready", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_for(ready, 60, what="router container ready")
        check_health(router, f"{url}/health")

        worker = run(docker_client, ["taskexec", "worker", "manual"],
                     {**common, "TASK_ROUTER_URL": url, "TEL_SERVICE_TOKEN": service_key,
                      "TEL_METRICS_PORT": str(worker_port)}, containers)
        r = requests.post(f"{url}/api/v1/tasks/definitions", headers=ADMIN, timeout=10,
                          json=manual_def("img-review", {"user": "alice"}))
        assert r.status_code == 201, r.text
        r = requests.post(f"{url}/api/v1/tasks", headers=ADMIN, timeout=10,
                          json={"taskDefinitionId": "img-review", "input": {}})
        assert r.status_code == 201, r.text

        task_id = r.json()["id"]

        def assigned() -> dict[str, Any] | None:
            task = requests.get(f"{url}/api/v1/tasks/{task_id}", headers=ADMIN, timeout=5).json()
            return task if task["status"] == "ASSIGNED" else None

        task = wait_for(assigned, 60, what="task ASSIGNED by the worker container")
        assert task["assignee"] == "alice"
        check_health(worker, f"http://127.0.0.1:{worker_port}/health")
        env = worker.exec_run(["env"])[1].decode()
        assert "DATABASE_URL" not in env  # workers hold no database credentials
    finally:
        for cont in containers:
            cont.remove(force=True)
        containers.clear()
        drop_database(dbname)


@pytest.mark.timeout(1500)
def test_image_runs_the_scheduler_and_flower_as_compose_does(image: Any, docker_client: docker.DockerClient,
                                                              containers: list[Any]) -> None:
    """The commands and health-check settings of compose.yaml's `scheduler` and `flower` services."""
    prefix = "img" + uuid.uuid4().hex[:8]
    common = {"CELERY_BROKER_URL": REDIS_URL, "TEL_SERVICE_TOKEN": "unused-here", "LOG_LEVEL": "INFO",
              "TEL_QUEUE_AUTOMATED_NAME": f"{prefix}-automated", "TEL_QUEUE_MANUAL_NAME": f"{prefix}-manual",
              "TEL_QUEUE_INTEGRATION_NAME": f"{prefix}-integration"}
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    beat_env = {k: str(v) for k, v in compose["scheduler"]["environment"].items()
                if k.startswith("TEL_HEALTHCHECK") or k == "TEL_STATE_DIR"}
    scheduler = run(docker_client, compose["scheduler"]["command"], {**common, **beat_env}, containers)
    port = free_port()
    flower_cmd = [part.replace("--port=5555", f"--port={port}") for part in compose["flower"]["command"]]
    flower = run(docker_client, flower_cmd, {**common, "TEL_HEALTHCHECK_URL": f"http://127.0.0.1:{port}/healthcheck"},
                 containers)

    def healthy(cont: Any) -> bool:
        cont.reload()
        assert cont.status == "running", cont.logs().decode(errors="replace")[-3000:]
        return cont.exec_run(["python3", "/opt/taskexec/healthcheck.py"])[0] == 0

    wait_for(lambda: healthy(scheduler), 60, what="scheduler writes its beat schedule file")
    wait_for(lambda: healthy(flower), 60, what="flower answers /healthcheck")
    assert requests.get(f"http://127.0.0.1:{port}/healthcheck", timeout=5).text == "OK"
    assert "beat: Starting" in scheduler.logs().decode(errors="replace")
