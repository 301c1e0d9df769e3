"""The Celery app Flower runs against: `celery -A commands.flower_app flower --port=5555`.

Through the app (rather than `celery --broker=$CELERY_BROKER_URL`), Flower gets the broker URL the way
every taskexec process does: with the password from TEL_BROKER_PASSWORD_FILE or Vault, so no secret
is on its command line or in its environment. `FLOWER_BASIC_AUTH_FILE` does the same for Flower's
own `user:password`. On RabbitMQ, Flower reads queue lengths from the management API; unless
`FLOWER_BROKER_API` says otherwise it is asked on the broker's host, port 15672, with the broker's
credentials (Flower itself would ask the AMQP port of a URL that names one).
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from taskexec.broker.celery_app import make_celery
from taskexec.core.config import get_settings
from taskexec.core.secret_sources import read_secret_file

if os.environ.get("FLOWER_BASIC_AUTH_FILE") and not os.environ.get("FLOWER_BASIC_AUTH"):
    # Flower reads its FLOWER_* options from the environment after loading this app. The shipped
    # deployments require a login: an empty file stops Flower rather than run it open.
    _auth = read_secret_file("FLOWER_BASIC_AUTH", os.environ["FLOWER_BASIC_AUTH_FILE"])
    if not _auth:
        raise SystemExit("FLOWER_BASIC_AUTH_FILE is empty: Flower needs a user:password (it can stop pools)")
    os.environ["FLOWER_BASIC_AUTH"] = _auth

MANAGEMENT_PORT = 15672  # RabbitMQ's management plugin


def broker_api(broker_url: str) -> str | None:
    """The management API URL of an AMQP broker URL (None for Redis)."""
    parts = urlsplit(broker_url)
    if not parts.scheme.startswith(("amqp", "pyamqp")):
        return None
    auth = f"{parts.username or 'guest'}:{parts.password or 'guest'}"
    return f"http://{auth}@{parts.hostname or 'localhost'}:{MANAGEMENT_PORT}/api/"


settings = get_settings()
if not os.environ.get("FLOWER_BROKER_API") and (api := broker_api(settings.broker_url)):
    os.environ["FLOWER_BROKER_API"] = api
app = make_celery(settings, name="taskexec-flower")
