"""The Flask router: `create_app()` wires settings, database, publisher and blueprints."""

from __future__ import annotations

from flask import Flask

from api import (
    dashboard,
    definitions,
    inbox_page,
    internal,
    manual,
    me,
    metrics,
    observe,
    ops,
    ratelimit,
    shedding,
    tasks,
)
from api.deadletters import bp as deadletters_bp
from api.docs import register_docs
from api.errors import register_error_handlers
from api.io import reject_nul_in_url
from api.metrics import broker_stats
from api.runtime import Runtime
from taskexec.broker.celery_app import make_celery
from taskexec.core.config import Settings, get_settings
from taskexec.observability.logs import configure_logging, secrets_of
from taskexec.services.dispatch import Dispatcher, Publisher
from taskexec.services.lifecycle import Lifecycle
from taskexec.services.manager import TaskManager
from taskexec.services.outbox import Deliverer
from taskexec.store.db import Database
from taskexec.store.keywatch import KeyWatch


def create_app(settings: Settings | None = None, *, start_dispatcher: bool | None = None) -> Flask:
    settings = settings or get_settings()
    configure_logging(settings.log_level, secrets_of(settings))
    app = Flask("taskexec")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    db = Database(settings.database_url)
    publisher = Publisher(settings, make_celery(settings))
    manager = TaskManager(settings, db)
    rt = Runtime(settings=settings, db=db, manager=manager, lifecycle=Lifecycle(manager, db), publisher=publisher,
                 deliverer=Deliverer(settings))
    if settings.outbox_thread if start_dispatcher is None else start_dispatcher:
        rt.dispatcher = Dispatcher(db, settings, publisher, rt.deliverer)
        rt.dispatcher.start()
    if settings.api_key_cache_s > 0:
        rt.keywatch = KeyWatch(settings.database_url)
        rt.keywatch.start()
    app.extensions["taskexec"] = rt
    for bp in (ops.bp, metrics.bp, definitions.bp, tasks.bp, manual.bp, me.bp, inbox_page.bp, dashboard.bp,
               internal.bp):
        app.register_blueprint(bp)
    app.register_blueprint(deadletters_bp)
    observe.install(app)  # request id, trace context, access log, HTTP metrics
    ratelimit.install(app, settings)  # per-principal limits and X-RateLimit-* headers on every /api/v1 answer
    app.before_request(reject_nul_in_url)
    shedding.install(app, settings, broker_stats)  # 503 for LOW/MEDIUM submissions to an overloaded queue
    register_docs(app)  # last: the document describes every route registered above
    register_error_handlers(app)
    return app
