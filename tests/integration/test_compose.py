"""compose.yaml: `docker-compose config` accepts it, it validates against the compose-spec JSON schema
(vendored in k8s/schemas/), and it has the seed deployment document's services and variable names."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Any

import jsonschema
import pytest
import yaml

from tests.support import ROOT

COMPOSE = ROOT / "compose.yaml"
REQUIRED = {"TEL_JWT_SECRET": "x" * 32, "TEL_SERVICE_TOKEN": "service-token", "POSTGRES_PASSWORD": "pw"}
# Seed document: services and the environment variable names each one is given.
SEED_ENV = {
    "task-router": {"LOG_LEVEL", "WORKFLOW_ORCHESTRATOR_URL", "DATABASE_URL"},
    "automated-task-executor": {"LOG_LEVEL", "TASK_ROUTER_URL", "MAX_CONCURRENT_TASKS", "EXECUTION_TIMEOUT"},
    "manual-task-handler": {"LOG_LEVEL", "TASK_ROUTER_URL", "NOTIFICATION_SERVICE_URL"},
    "integration-task-executor": {"LOG_LEVEL", "TASK_ROUTER_URL", "INTEGRATION_SERVICE_URL", "SECRETS_MANAGER_URL"},
    "postgres": {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"},
}


def compose_command() -> list[str]:
    """docker-compose (Debian package `docker-compose`, installed by scripts/bootstrap.sh) or `docker compose`."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    pytest.fail("neither docker-compose nor `docker compose` is installed (apt-get install docker-compose)")


def run_config(env: dict[str, str], *overrides: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in REQUIRED and k != "RABBITMQ_PASSWORD"}
    files = [arg for f in (str(COMPOSE), *overrides) for arg in ("-f", f)]
    return subprocess.run([*compose_command(), *files, "--project-directory", str(ROOT), "config"],
                          env={**clean, **env}, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def rendered() -> dict[str, Any]:
    out = run_config(REQUIRED)
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)  # type: ignore[no-any-return]


def test_docker_compose_config_passes(rendered: dict[str, Any]) -> None:
    assert {"task-router", "automated-task-executor", "flower"} <= set(rendered["services"])


def test_compose_refuses_to_start_without_its_secrets() -> None:
    out = run_config({k: v for k, v in REQUIRED.items() if k != "TEL_JWT_SECRET"})
    assert out.returncode != 0 and "TEL_JWT_SECRET" in out.stderr


def test_compose_file_validates_against_the_compose_spec_schema() -> None:
    schema = json.loads((ROOT / "k8s" / "schemas" / "compose-spec.json").read_text())
    validator = jsonschema.Draft201909Validator(schema)
    validator.validate(yaml.safe_load(COMPOSE.read_text()))
    validator.validate(yaml.safe_load((ROOT / "compose.rabbitmq.yaml").read_text()))
    broken = yaml.safe_load(COMPOSE.read_text())
    broken["services"]["task-router"]["enviroment"] = {}  # a typo is caught
    assert list(validator.iter_errors(broken))


def test_seed_services_and_variable_names(rendered: dict[str, Any]) -> None:
    services = rendered["services"]
    assert {*SEED_ENV, "redis", "scheduler", "flower"} <= set(services)
    for name, names in SEED_ENV.items():
        assert names <= set(services[name]["environment"]), (name, names - set(services[name]["environment"]))
    automated = services["automated-task-executor"]
    assert automated["deploy"]["replicas"] == 3
    assert automated["environment"]["MAX_CONCURRENT_TASKS"] == "50"
    assert automated["environment"]["EXECUTION_TIMEOUT"] == "300000"
    assert "8081" in json.dumps(services["task-router"]["ports"])
    assert "flower" in " ".join(services["flower"]["command"])


def test_no_docker_socket_and_database_credentials_only_where_needed(rendered: dict[str, Any]) -> None:
    code = [line.split("#", 1)[0] for line in COMPOSE.read_text().splitlines()]  # comments may explain why
    assert not [line for line in code if "docker.sock" in line]
    for name, service in rendered["services"].items():
        for volume in service.get("volumes", []):
            source = volume.get("source", "") if isinstance(volume, dict) else volume
            assert "docker.sock" not in str(source), name
    automated = rendered["services"]["automated-task-executor"]
    assert automated["environment"]["DOCKER_HOST"].startswith("tcp://dind:")  # the sidecar engine, over TLS
    holders = {n for n, s in rendered["services"].items() if "DATABASE_URL" in s.get("environment", {})}
    assert holders <= {"task-router", "migrate", "backup"} and "task-router" in holders


def test_worker_and_scheduler_healthchecks(rendered: dict[str, Any]) -> None:
    """Pools check their own /health on TEL_METRICS_PORT (9540) with scripts/healthcheck.py (the image's
    HEALTHCHECK); the scheduler checks its schedule file is being rewritten."""
    services = rendered["services"]
    for name in ("automated-task-executor", "manual-task-handler", "integration-task-executor"):
        service = services[name]
        assert service["environment"]["TEL_HEALTHCHECK_URL"] == "http://127.0.0.1:9540/health", name
        assert "TEL_METRICS_PORT" not in service["environment"], name
        assert service["healthcheck"]["test"] == ["CMD", "python3", "/opt/taskexec/healthcheck.py"], name
    scheduler = services["scheduler"]
    assert scheduler["environment"]["TEL_HEALTHCHECK_FILE"].startswith(
        scheduler["environment"]["TEL_STATE_DIR"] + "/celerybeat-schedule")
    assert scheduler["healthcheck"]["test"][-1] == "/opt/taskexec/healthcheck.py"
    assert services["flower"]["environment"]["TEL_HEALTHCHECK_URL"].endswith(":5555/healthcheck")


def test_rabbitmq_override_moves_every_service_to_amqp_and_keeps_redis_for_integration_state() -> None:
    override = str(ROOT / "compose.rabbitmq.yaml")
    refused = run_config(REQUIRED, override)
    assert refused.returncode != 0 and "RABBITMQ_PASSWORD" in refused.stderr
    out = run_config({**REQUIRED, "RABBITMQ_PASSWORD": "rabbit-pw"}, override)
    assert out.returncode == 0, out.stderr
    services = yaml.safe_load(out.stdout)["services"]
    assert services["rabbitmq"]["environment"]["RABBITMQ_DEFAULT_PASS"] == "rabbit-pw"
    taskexec = [name for name, svc in services.items() if "redis://redis" in json.dumps(svc.get("environment"))
                or "amqp://" in json.dumps(svc.get("environment"))]
    assert set(taskexec) == {"task-router", "automated-task-executor", "manual-task-handler",
                             "integration-task-executor", "scheduler", "flower"}
    for name in taskexec:
        env = services[name]["environment"]
        assert env["CELERY_BROKER_URL"] == "amqp://taskexec:rabbit-pw@rabbitmq:5672//", name
        assert services[name]["depends_on"]["rabbitmq"] == {"condition": "service_healthy"}, name
        assert env["TEL_SERVICE_TOKEN"] == "service-token", name  # compose.yaml's environment is kept
    assert services["integration-task-executor"]["environment"]["TEL_REDIS_URL"] == "redis://redis:6379/0"
