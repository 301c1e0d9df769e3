"""compose.yaml: `docker-compose config` accepts it, it validates against the compose-spec JSON schema
(vendored in k8s/schemas/), it has the seed deployment document's services and variable names, and
every secret is a Docker secret (a file), never a value in the environment."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.monitoring_support import DASHBOARD, SCRAPE_CONFIG
from tests.support import ROOT
from workers.node import POOLS

COMPOSE = ROOT / "compose.yaml"
REQUIRED: dict[str, str] = {}  # nothing secret comes from the environment any more
# Seed document: services and the environment variable names each one is given (the seed's
# POSTGRES_PASSWORD as the official image's POSTGRES_PASSWORD_FILE).
SEED_ENV = {
    "task-router": {"LOG_LEVEL", "WORKFLOW_ORCHESTRATOR_URL", "DATABASE_URL"},
    "automated-task-executor": {"LOG_LEVEL", "TASK_ROUTER_URL", "MAX_CONCURRENT_TASKS", "EXECUTION_TIMEOUT"},
    "manual-task-handler": {"LOG_LEVEL", "TASK_ROUTER_URL", "NOTIFICATION_SERVICE_URL"},
    "integration-task-executor": {"LOG_LEVEL", "TASK_ROUTER_URL", "INTEGRATION_SERVICE_URL", "SECRETS_MANAGER_URL"},
    "postgres": {"POSTGRES_USER", "POSTGRES_PASSWORD_FILE", "POSTGRES_DB"},
}
# Variables that would hold a secret's value; only their *_FILE forms may appear.
SECRET_VALUES = {"TEL_JWT_SECRET", "TEL_JWT_SECRET_PREVIOUS", "TEL_SERVICE_TOKEN", "TEL_WEBHOOK_SECRET",
                 "TEL_SECRETS_TOKEN", "TEL_DATABASE_PASSWORD", "TEL_BROKER_PASSWORD", "POSTGRES_PASSWORD",
                 "RABBITMQ_DEFAULT_PASS", "FLOWER_BASIC_AUTH", "TEL_VAULT_TOKEN"}


def compose_command() -> list[str]:
    """docker-compose (Debian package `docker-compose`, installed by scripts/bootstrap.sh) or `docker compose`."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    pytest.fail("neither docker-compose nor `docker compose` is installed (apt-get install docker-compose)")


def run_config(env: dict[str, str], *overrides: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in SECRET_VALUES and k != "TEL_SECRETS_DIR"}
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


def _secrets_of(rendered: dict[str, Any]) -> dict[str, set[str]]:
    return {name: {s["source"] if isinstance(s, dict) else s for s in svc.get("secrets", [])}
            for name, svc in rendered["services"].items()}


def test_secrets_are_files_mounted_only_where_needed(rendered: dict[str, Any]) -> None:
    files = {name: Path(spec["file"]) for name, spec in rendered["secrets"].items()}
    assert set(files) == {"jwt_secret", "service_token", "postgres_password", "webhook_secret", "secrets_token",
                          "flower_basic_auth", "grafana_admin_password"}
    assert {p.parent for p in files.values()} == {ROOT / "secrets"}  # TEL_SECRETS_DIR, git-ignored
    assert "secrets/" in (ROOT / ".gitignore").read_text().splitlines()
    mounted = _secrets_of(rendered)
    for name, service in rendered["services"].items():
        env = service.get("environment", {})
        assert not SECRET_VALUES & set(env), (name, SECRET_VALUES & set(env))
        for key, value in env.items():
            scheme, _, rest = str(value).partition("://")
            userinfo, at, _ = rest.partition("/")[0].rpartition("@")
            assert not (at and ":" in userinfo), (name, key)  # no password in a URL's userinfo
            if key.removesuffix("_FILE") in SECRET_VALUES:  # each points at a secret this service mounts
                assert value.startswith("/run/secrets/") and value.rsplit("/", 1)[1] in mounted[name], (name, key)
    assert mounted["task-router"] == {"jwt_secret", "service_token", "webhook_secret", "postgres_password"}
    holders = {name for name, secrets in mounted.items() if "postgres_password" in secrets}
    assert holders == {"task-router", "migrate", "backup", "postgres"}
    assert {name for name, secrets in mounted.items() if "jwt_secret" in secrets} == {"task-router"}
    assert rendered["services"]["task-router"]["environment"]["DATABASE_URL"] == \
        "postgresql+psycopg://tasks@postgres:5432/tasks"


def test_the_rendered_file_variables_configure_taskexec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The router's environment from compose, with the secret files where compose mounts them, gives the
    settings the router needs (taskexec reads *_FILE the same way in the container)."""
    from taskexec.core.config import load_settings

    out = run_config({"TEL_SECRETS_DIR": str(tmp_path)})
    rendered = yaml.safe_load(out.stdout)
    values = {"jwt_secret": "j" * 40, "service_token": "tel_service", "postgres_password": "db pw",
              "webhook_secret": "", "secrets_token": ""}
    for name, value in values.items():
        (tmp_path / name).write_text(value + "\n")
    assert {Path(s["file"]).parent for s in rendered["secrets"].values()} == {tmp_path}
    for key, value in rendered["services"]["task-router"]["environment"].items():
        monkeypatch.setenv(key, str(value).replace("/run/secrets", str(tmp_path)))
    settings = load_settings()
    settings.require_jwt_secret()
    assert settings.database_url == "postgresql+psycopg://tasks:db%20pw@postgres:5432/tasks"
    assert settings.service_token and settings.service_token.get_secret_value() == "tel_service"
    assert settings.webhook_secret is None  # an empty optional secret file


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
    assert set(rendered["services"]["flower"]["command"][:3]) == {"celery", "-A", "commands.flower_app"}


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
    out = run_config(REQUIRED, override)
    assert out.returncode == 0, out.stderr
    rendered = yaml.safe_load(out.stdout)
    services = rendered["services"]
    assert Path(rendered["secrets"]["rabbitmq_password"]["file"]) == ROOT / "secrets" / "rabbitmq_password"
    rabbit = services["rabbitmq"]
    assert "RABBITMQ_DEFAULT_PASS" not in rabbit["environment"]  # read from the secret file at start
    assert "/run/secrets/rabbitmq_password" in " ".join(rabbit["entrypoint"])
    taskexec = [name for name, svc in services.items() if "redis://redis" in json.dumps(svc.get("environment"))
                or "amqp://" in json.dumps(svc.get("environment"))]
    assert set(taskexec) == {"task-router", "automated-task-executor", "manual-task-handler",
                             "integration-task-executor", "scheduler", "flower"}
    mounted = _secrets_of(rendered)
    for name in taskexec:
        env = services[name]["environment"]
        assert env["CELERY_BROKER_URL"] == "amqp://taskexec@rabbitmq:5672//", name
        assert env["TEL_BROKER_PASSWORD_FILE"] == "/run/secrets/rabbitmq_password", name
        assert "rabbitmq_password" in mounted[name], name
        assert services[name]["depends_on"]["rabbitmq"] == {"condition": "service_healthy"}, name
    for name in ("task-router", "automated-task-executor", "scheduler"):  # compose.yaml's settings are kept
        assert services[name]["environment"]["TEL_SERVICE_TOKEN_FILE"] == "/run/secrets/service_token", name
        assert "service_token" in mounted[name], name
    assert services["integration-task-executor"]["environment"]["TEL_REDIS_URL"] == "redis://redis:6379/0"
    # Flower's queue lengths on RabbitMQ come from the management API (the image that serves it;
    # commands.flower_app points Flower at it with the broker's credentials)
    assert services["rabbitmq"]["image"].endswith("-management")
    assert services["flower"]["command"][:3] == ["celery", "-A", "commands.flower_app"]


POOL_SERVICES = {"automated": "automated-task-executor", "manual": "manual-task-handler",
                 "integration": "integration-task-executor"}


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> host path (or volume name) of a rendered service's volumes."""
    out = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            out[volume["target"]] = volume["source"]
        else:
            source, target = volume.split(":")[:2]
            out[target] = source
    return out


def _networks(service: dict[str, Any]) -> set[str]:
    return set(service.get("networks") or {"default"})


def _published_on_loopback(service: dict[str, Any]) -> bool:
    ports = service["ports"]
    return bool(ports) and all((p.get("host_ip") if isinstance(p, dict) else p.split(":")[0]) == "127.0.0.1"
                               for p in ports)


def test_prometheus_scrapes_the_router_and_every_pool_replica(rendered: dict[str, Any]) -> None:
    """monitoring/prometheus/prometheus.yml: one job per service, named like it (and like the k8s Service),
    found through Docker's DNS (type A: every replica), on the port the service serves /metrics on, sharing
    a network with Prometheus; each pool job adds its `pool` label; the alert rules are loaded."""
    services = rendered["services"]
    prom = services["prometheus"]
    assert _mounts(prom)["/etc/prometheus"] == str(SCRAPE_CONFIG.parent)
    assert "--config.file=/etc/prometheus/prometheus.yml" in prom["command"]
    assert _published_on_loopback(prom)
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    assert config["rule_files"] and all((SCRAPE_CONFIG.parent / f).is_file() for f in config["rule_files"])
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"task-router", *POOL_SERVICES.values()} and set(POOL_SERVICES) == set(POOLS)
    for name, job in jobs.items():
        (discovery,) = job["dns_sd_configs"]
        assert discovery["names"] == [name] and discovery["type"] == "A"
        service = services[name]
        assert _networks(prom) & _networks(service), name
        assert job.get("metrics_path", "/metrics") == "/metrics"
        if name == "task-router":
            assert discovery["port"] == int(service["environment"]["TEL_PORT"])
            assert "relabel_configs" not in job
            continue
        health = service["environment"]["TEL_HEALTHCHECK_URL"]  # the worker's own port: /health and /metrics
        assert discovery["port"] == int(health.rsplit(":", 1)[1].split("/")[0]), name
        pool = next(p for p, s in POOL_SERVICES.items() if s == name)
        assert job["relabel_configs"] == [{"target_label": "pool", "replacement": pool}], name
        assert job["honor_labels"] is True
    assert services["automated-task-executor"]["deploy"]["replicas"] > 1  # why DNS discovery, not one target


def test_grafana_is_provisioned_with_prometheus_and_the_dashboard(rendered: dict[str, Any]) -> None:
    grafana = rendered["services"]["grafana"]
    mounts = _mounts(grafana)
    provisioning = ROOT / "monitoring" / "grafana" / "provisioning"
    assert mounts["/etc/grafana/provisioning"] == str(provisioning)
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "taskexec.yml").read_text())["providers"]
    assert mounts[provider["options"]["path"]] == str(DASHBOARD.parent)
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert source["type"] == "prometheus" and source["isDefault"] is True
    assert source["url"] == "http://prometheus:9090" and "prometheus" in rendered["services"]
    assert _networks(grafana) & _networks(rendered["services"]["prometheus"])
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/secrets/grafana_admin_password"
    assert "grafana_admin_password" in _secrets_of(rendered)["grafana"]
    assert grafana["environment"]["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert _published_on_loopback(grafana)


def test_flower_requires_basic_auth(rendered: dict[str, Any]) -> None:
    flower = rendered["services"]["flower"]
    assert flower["environment"]["FLOWER_BASIC_AUTH_FILE"] == "/run/secrets/flower_basic_auth"
    assert "flower_basic_auth" in _secrets_of(rendered)["flower"]
    assert _published_on_loopback(flower)
