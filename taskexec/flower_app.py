"""The Celery app Flower runs against: `celery -A taskexec.flower_app flower --port=5555`.

Through the app (rather than `celery --broker=$CELERY_BROKER_URL`), Flower gets the broker URL the way
every taskexec process does: with the password from TEL_BROKER_PASSWORD_FILE or Vault, so no secret
is on its command line or in its environment. `FLOWER_BASIC_AUTH_FILE` does the same for Flower's
own `user:password`.
"""

from __future__ import annotations

import os

from taskexec.celery_app import make_celery
from taskexec.config import get_settings
from taskexec.secret_sources import read_secret_file

if os.environ.get("FLOWER_BASIC_AUTH_FILE") and not os.environ.get("FLOWER_BASIC_AUTH"):
    # Flower reads its FLOWER_* options from the environment after loading this app.
    _auth = read_secret_file("FLOWER_BASIC_AUTH", os.environ["FLOWER_BASIC_AUTH_FILE"])
    if _auth:
        os.environ["FLOWER_BASIC_AUTH"] = _auth

app = make_celery(get_settings(), name="taskexec-flower")
