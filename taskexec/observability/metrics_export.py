"""Where a process's metrics are exposed: multiprocess mode for the router, an HTTP port for a worker.

The router runs several gunicorn worker processes; a scrape reaches only one of them, so the router
uses Prometheus' multiprocess mode: `prepare_multiprocess_dir()` runs in the gunicorn master before
`prometheus_client` is imported (it picks the value store at import time), gunicorn's `child_exit`
hook calls `mark_process_dead(pid)`, and `/metrics` merges the per-process files.

Worker pools run Celery's thread pool (one process per worker), so a worker serves its own default
registry on `TEL_METRICS_PORT` (`serve()`, a stdlib WSGI server dispatching `/health` and `/ready`
to `workers/health.py`); no multiprocess mode is needed there. If
`PROMETHEUS_MULTIPROC_DIR` is set anyway, both paths read the merged files instead.

This module imports `prometheus_client` lazily, so calling `prepare_multiprocess_dir` is safe first.
"""

from __future__ import annotations

import glob
import logging
import os
import tempfile
import threading
from collections.abc import Iterable, Mapping
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

log = logging.getLogger(__name__)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_multiprocess_dir() -> str:
    """Use `PROMETHEUS_MULTIPROC_DIR` (or a fresh temp dir), emptied of an earlier run's files."""
    path = os.environ.get(MULTIPROC_ENV) or tempfile.mkdtemp(prefix="taskexec-metrics-")
    os.makedirs(path, exist_ok=True)
    for stale in glob.glob(os.path.join(path, "*.db")):
        os.remove(stale)
    os.environ[MULTIPROC_ENV] = path
    return path


def mark_process_dead(pid: int) -> None:
    """gunicorn `child_exit` hook: drop a dead process's live gauges (counters are kept)."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


def base_registry() -> Any:
    """The recorded metrics of this process (or of all router processes in multiprocess mode)."""
    from prometheus_client import REGISTRY, CollectorRegistry, multiprocess

    if not os.environ.get(MULTIPROC_ENV):
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


def render(collectors: Iterable[Any] = ()) -> tuple[bytes, str]:
    """Exposition text of the recorded metrics plus `collectors` (computed now); returns (body, content type)."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    body = generate_latest(base_registry())
    extra = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        extra.register(collector)
    return body + generate_latest(extra), CONTENT_TYPE_LATEST


def metrics_app(routes: Mapping[str, Any] | None = None) -> Any:
    """WSGI app: the exact paths in `routes` (WSGI apps, e.g. a worker's `/health`), everything else
    Prometheus' exposition of this process's metrics (as `start_http_server` serves it)."""
    from prometheus_client import make_wsgi_app

    fallback = make_wsgi_app(base_registry())
    table = dict(routes or {})

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        return table.get(environ.get("PATH_INFO") or "/", fallback)(environ, start_response)

    return app


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a slow scrape never holds up the process's exit


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        """No access log line per probe or scrape."""


def serve(port: int, addr: str = "0.0.0.0", routes: Mapping[str, Any] | None = None) -> bool:
    """Serve this process's metrics (plus `routes`) on `port` from a daemon thread (0 disables);
    False (logged, not fatal) if the port is taken."""
    if not port:
        return False
    try:
        httpd = make_server(addr, port, metrics_app(routes), _ThreadingServer, handler_class=_QuietHandler)
    except OSError as exc:
        log.error("metrics port unavailable; this worker exposes no metrics",
                  extra={"port": port, "error": str(exc)})
        return False
    threading.Thread(target=httpd.serve_forever, name="metrics-http", daemon=True).start()
    log.info("metrics served", extra={"port": port, "paths": ["/metrics", *sorted(routes or {})]})
    return True
