"""`commands.flower_app`, the app Compose and Kubernetes start Flower with: it brings the broker URL and
Flower's login from secret files, refuses to run Flower open, and points Flower at RabbitMQ's
management API for queue lengths."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from commands.flower_app import broker_api

CHECK = ("import os, commands.flower_app as f; "
         "print(os.environ['FLOWER_BASIC_AUTH'], os.environ.get('FLOWER_BROKER_API'))")


def run(tmp_path: Path, auth: str, broker: str) -> subprocess.CompletedProcess[str]:
    secret = tmp_path / "flower_basic_auth"
    secret.write_text(auth)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEL_", "FLOWER_", "CELERY_"))}
    env.update(FLOWER_BASIC_AUTH_FILE=str(secret), CELERY_BROKER_URL=broker)
    return subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, timeout=60)


def test_login_from_the_file_and_management_api_from_the_amqp_url(tmp_path: Path) -> None:
    out = run(tmp_path, "ops:s3cret\n", "amqp://taskexec:pw@rabbitmq:5672//")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["ops:s3cret", "http://taskexec:pw@rabbitmq:15672/api/"]
    assert broker_api("redis://redis:6379/0") is None


def test_an_empty_login_file_stops_flower(tmp_path: Path) -> None:
    out = run(tmp_path, "", "redis://127.0.0.1:6379/0")
    assert out.returncode != 0 and "FLOWER_BASIC_AUTH_FILE is empty" in out.stderr
