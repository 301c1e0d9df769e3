"""What each process of `taskexec up` is given, the worker node names, and the integration pool's
start-up check of its shared state (pure functions; the e2e test reads the real processes' /proc)."""

from __future__ import annotations

import subprocess

import pytest

from commands.up import POOL_ONLY, ROUTER_ONLY, local_redis_url, process_env
from taskexec.core.config import ConfigError, Settings
from tests.support import AMQP_URL, REDIS_URL, ROOT, taskexec
from workers.integration.shared import require_shared_state
from workers.node import node_name, pool_of

ENV = {"PATH": "/usr/bin", "DATABASE_URL": "postgresql://postgres@127.0.0.1:55432/taskexec",
       "TEL_JWT_SECRET": "x" * 40, "TEL_WEBHOOK_SECRET": "hook", "TEL_SECRETS_TOKEN": "vault", "LOG_LEVEL": "INFO"}


def settings(**env: str) -> Settings:
    return Settings(**env)  # type: ignore[arg-type]


def test_node_names_are_unique_per_process_and_keep_the_pool_as_prefix() -> None:
    assert node_name("automated", 1234) == "automated-1234@%h" and node_name("manual", 7) != node_name("manual", 8)
    assert pool_of("automated-1234@ci-host") == "automated" and pool_of("integration-9@h.example") == "integration"
    assert pool_of("manual@host") == "manual"  # the older form still parses
    assert pool_of("celery@host") == "unknown" and pool_of("automated-1234") == "unknown"


@pytest.mark.parametrize("broker", ["redis", "amqp"])
def test_each_process_gets_only_what_it_needs(broker: str) -> None:
    s = settings(CELERY_BROKER_URL=REDIS_URL if broker == "redis" else AMQP_URL)
    env = {**ENV, "CELERY_BROKER_URL": s.broker_url}
    router, pool, beat = (process_env(env, role, s, "tel_key") for role in ("router", "pool", "beat"))
    assert router["DATABASE_URL"] and router["TEL_JWT_SECRET"] and not set(POOL_ONLY) & set(router)
    assert not set(ROUTER_ONLY) & set(pool) and not set(ROUTER_ONLY) & set(beat)
    assert pool["TEL_SERVICE_TOKEN"] == "tel_key" and pool["TEL_SECRETS_TOKEN"] == "vault"
    assert not set(POOL_ONLY) & set(beat), "the scheduler only publishes: no credential at all"
    # with RabbitMQ the breakers and rate limits go to the local Redis; with a Redis broker they stay on it
    assert pool.get("TEL_REDIS_URL") == (None if broker == "redis" else local_redis_url())


def test_integration_pool_without_shared_state_fails_closed() -> None:
    require_shared_state(settings(CELERY_BROKER_URL=REDIS_URL))
    require_shared_state(settings(CELERY_BROKER_URL=AMQP_URL, TEL_REDIS_URL=REDIS_URL))
    require_shared_state(settings(CELERY_BROKER_URL=AMQP_URL, TEL_INTEGRATION_LOCAL_STATE="true"))
    with pytest.raises(ConfigError, match="TEL_INTEGRATION_LOCAL_STATE=true"):
        require_shared_state(settings(CELERY_BROKER_URL=AMQP_URL))


def test_integration_worker_refuses_to_start_without_shared_state() -> None:
    """The real command: exit 2 with the message, before it connects to anything."""
    env = {"PATH": "/usr/bin:/bin", "CELERY_BROKER_URL": AMQP_URL, "TEL_METRICS_PORT": "0"}
    out = subprocess.run(taskexec("worker", "integration"), env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "TEL_REDIS_URL" in out.stderr and "TEL_INTEGRATION_LOCAL_STATE=true" in out.stderr
