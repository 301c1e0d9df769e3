"""The `taskexec` command: one image, several roles (router, worker <pool>, beat, up, ...)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from email.utils import formatdate
from typing import Any

from commands import client_cli
from taskexec.core.config import ConfigError, Settings, get_settings, reset_settings
from taskexec.core.constants import POOLS, Pool

_date: tuple[int, str] = (0, "")


def http_date(timestamp: float | None = None) -> str:
    """gunicorn's `util.http_date`, cached per second: it formats the Date header through `email.utils` on every
    response (3-4 % of the router's CPU under load)."""
    global _date
    if timestamp is not None:
        return formatdate(timestamp, usegmt=True)
    now = int(time.time())
    cached = _date
    if cached[0] != now:
        cached = _date = (now, formatdate(now, usegmt=True))
    return cached[1]


def cmd_router(args: argparse.Namespace) -> None:
    from taskexec.observability.metrics_export import mark_process_dead, prepare_multiprocess_dir

    prepare_multiprocess_dir()  # before prometheus_client is imported: gunicorn's processes share /metrics
    from gunicorn import util as gunicorn_util
    from gunicorn.app.base import BaseApplication

    from api.errors import write_protocol_error

    gunicorn_util.write_error = write_protocol_error  # its own 400/431 pages: JSON envelope, not HTML
    gunicorn_util.http_date = http_date  # its Date header, formatted once a second instead of per response
    settings = get_settings()
    settings.require_jwt_secret()
    if args.migrate:
        from taskexec.store.migrate import upgrade

        upgrade(settings.database_url)

    class Router(BaseApplication):
        def load_config(self) -> None:
            self.cfg.set("bind", f"{settings.host}:{args.port or settings.port}")
            self.cfg.set("workers", settings.router_workers)
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("threads", settings.router_threads)
            self.cfg.set("timeout", 60)
            # An idle kept-alive connection is closed after this long (gunicorn's default is 2 s). Longer than
            # the idle timeouts of common proxies and clients (60 s for AWS ALB, 60 s nginx upstream keepalive),
            # so they close first: a client never sends a request on a connection the router is closing at that
            # moment (seen as "Remote end closed connection without response"). gthread holds an idle
            # connection in its selector, not in a thread.
            self.cfg.set("keepalive", 75)
            self.cfg.set("graceful_timeout", 20)
            self.cfg.set("accesslog", None)
            self.cfg.set("child_exit", lambda _server, worker: mark_process_dead(worker.pid))
            if settings.tls_cert_file and settings.tls_key_file:  # HTTPS, TLS 1.2 at least
                self.cfg.set("certfile", settings.tls_cert_file)
                self.cfg.set("keyfile", settings.tls_key_file)
                self.cfg.set("ssl_context", tls_context)

        def load(self) -> Any:
            from api import create_app

            return create_app(settings)

    Router().run()


def tls_context(_config: Any, default_ssl_context_factory: Any) -> Any:
    """gunicorn's server context (certificate and key loaded) with TLS 1.2 as the minimum version."""
    import ssl

    context = default_ssl_context_factory()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def cmd_worker(args: argparse.Namespace) -> None:
    if args.metrics_port is not None:  # the option sets TEL_METRICS_PORT for this worker
        os.environ["TEL_METRICS_PORT"] = str(args.metrics_port)
        reset_settings()
    settings = get_settings()
    if args.pool == Pool.INTEGRATION:
        from workers.integration.shared import require_shared_state

        require_shared_state(settings)  # fail closed: breakers and rate limits need shared state
    from workers.app import app
    from workers.node import node_name

    queue = settings.queues[args.pool.upper()]
    concurrency = args.concurrency or {
        Pool.AUTOMATED: settings.max_concurrent_tasks,
        Pool.MANUAL: settings.manual_concurrency,
        Pool.INTEGRATION: settings.integration_concurrency,
    }[args.pool]
    if args.pool == Pool.AUTOMATED:
        from workers.automated import reap_and_report

        try:  # a restart must not leave an earlier life's containers (or RUNNING tasks) behind
            reap_and_report(settings)
        except Exception as exc:  # noqa: BLE001 - the engine may be starting; beat's reap retries
            print(f"taskexec: start-up reap skipped: {exc}", file=sys.stderr)
    # no -P: the app's `worker_pool` is workers.pool:ThreadPool (Celery's threads pool, resizable)
    argv = ["worker", "-Q", queue, "-c", str(concurrency), "-n", node_name(args.pool),
            "-E", "--loglevel", settings.log_level, "--without-mingle"]
    if args.autoscale:
        argv += ["--autoscale", args.autoscale]
    app.worker_main(argv)


def cmd_beat(_: argparse.Namespace) -> None:
    from workers.app import app
    from workers.scheduler import configure_beat

    settings = get_settings()
    configure_beat(app, settings)
    app.start(["beat", "--loglevel", settings.log_level, "-s", os.path.join(_state_dir(), "celerybeat-schedule")])


def cmd_migrate(args: argparse.Namespace) -> None:
    from taskexec.store.migrate import current, downgrade, upgrade

    url = get_settings().database_url
    if args.downgrade:  # a rollback: undo this release's migrations before deploying the previous release
        downgrade(url, args.downgrade)
        print(f"database is at revision {current(url)}")
        return
    upgrade(url)
    print("database is at the latest revision")


def cmd_token(args: argparse.Namespace) -> None:
    from taskexec.store.auth import issue_token

    settings = get_settings()
    settings.require_jwt_secret()
    roles = [r for r in args.roles.split(",") if r]
    perms = [p for p in (args.permissions or "").split(",") if p]
    print(issue_token(settings, args.sub, roles, ttl=args.ttl, permissions=perms or None))


def cmd_apikey(args: argparse.Namespace) -> None:
    from taskexec.store.auth import create_api_key, revoke_api_key
    from taskexec.store.db import Database

    db = Database(get_settings().database_url)
    with db.session() as s:
        if args.action == "create":
            try:
                row, key = create_api_key(s, args.name, [r for r in args.roles.split(",") if r])
            except ValueError as exc:
                raise SystemExit(f"error: {exc}") from None
            print(json.dumps({"id": row.id, "name": row.name, "roles": row.roles, "key": key}))
            print("store the key now: it is not shown again", file=sys.stderr)
        else:
            revoke_api_key(s, args.id)
            print(f"revoked {args.id}")


def cmd_sandbox(args: argparse.Namespace) -> None:
    from sandbox import build_images

    settings = get_settings()
    if args.action == "egress-rules":
        cmd_egress_rules(args, settings)
        return
    build_images({"python": settings.sandbox_image_python, "shell": settings.sandbox_image_shell}, force=args.force,
                 suite=settings.sandbox_suite, mirror=settings.sandbox_mirror)


def cmd_egress_rules(args: argparse.Namespace, settings: Settings) -> None:
    """Create the egress network of tasks with outbound access and install (or print, or remove) its rules."""
    import docker

    from sandbox import egress
    from taskexec.core.netpolicy import parse_networks, refused_ipv4_networks

    net = egress.ensure_network(docker.from_env(timeout=60), settings.sandbox_network)
    allowed = [str(n) for n in parse_networks(settings.sandbox_allowed_networks) if n.version == 4]
    resolvers = egress.host_resolvers()
    if args.remove:
        egress.remove(net)
        print(f"removed the egress rules of network {net.name}")
    elif args.print:
        print(egress.script(net, refused_ipv4_networks(), allowed, resolvers), end="")
    else:
        egress.install(net, refused_ipv4_networks(), allowed, resolvers)
        print(f"egress rules installed for network {net.name} (bridge {net.bridge}, {net.subnet})")


def cmd_db(args: argparse.Namespace) -> None:
    from commands.backup import BackupError, backup, restore

    settings = get_settings()
    try:
        if args.action == "backup":
            days = settings.backup_retention_days if args.retention_days is None else args.retention_days
            res = backup(settings.database_url, args.dir or settings.backup_dir, retention_days=days)
            print(json.dumps({"backup": str(res.path), "sizeBytes": res.size_bytes,
                              "pruned": [str(p) for p in res.pruned]}))
        else:
            restore(settings.database_url, args.file)
            print(f"restored {args.file}")
    except BackupError as exc:
        raise SystemExit(f"error: {exc}") from None


def cmd_config(_: argparse.Namespace) -> None:
    print(json.dumps(get_settings().redacted(), indent=2, default=str))


def cmd_up(args: argparse.Namespace) -> None:
    from commands.up import run_stack

    run_stack(port=args.port)


def _state_dir() -> str:
    path = os.path.abspath(get_settings().state_dir)
    os.makedirs(path, exist_ok=True)
    return path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="taskexec", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="run router, one worker per pool and the scheduler in the foreground")
    up.add_argument("--port", type=int, default=None)
    up.set_defaults(func=cmd_up)
    r = sub.add_parser("router", help="the REST router (gunicorn)")
    r.add_argument("--port", type=int, default=None)
    r.add_argument("--migrate", action="store_true", help="apply migrations first")
    r.set_defaults(func=cmd_router)
    w = sub.add_parser("worker", help="a worker pool")
    w.add_argument("pool", choices=POOLS)
    w.add_argument("--concurrency", type=int, default=None)
    w.add_argument("--metrics-port", type=int, default=None, help="Prometheus port (TEL_METRICS_PORT; 0: none)")
    w.add_argument("--autoscale", default=None, metavar="MAX,MIN",
                   help="let Celery's autoscaler size the pool between MIN and MAX slots")
    w.set_defaults(func=cmd_worker)
    sub.add_parser("beat", help="the scheduler of periodic jobs").set_defaults(func=cmd_beat)
    m = sub.add_parser("migrate", help="apply database migrations (or roll them back: --downgrade)")
    m.add_argument("--downgrade", metavar="REVISION", default=None,
                   help="roll back to this revision (e.g. 0002, or -1 for one step); see docs/operations.md")
    m.set_defaults(func=cmd_migrate)
    sub.add_parser("config", help="print the configuration (secrets redacted)").set_defaults(func=cmd_config)
    t = sub.add_parser("token", help="print a JWT signed with TEL_JWT_SECRET")
    t.add_argument("--sub", required=True)
    t.add_argument("--roles", default="")
    t.add_argument("--permissions", default="")
    t.add_argument("--ttl", type=int, default=3600)
    t.set_defaults(func=cmd_token)
    k = sub.add_parser("apikey", help="manage API keys")
    ksub = k.add_subparsers(dest="action", required=True)
    kc = ksub.add_parser("create")
    kc.add_argument("--name", required=True)
    kc.add_argument("--roles", required=True)
    kr = ksub.add_parser("revoke")
    kr.add_argument("id")
    k.set_defaults(func=cmd_apikey)
    sb = sub.add_parser("sandbox", help="sandbox images")
    sbsub = sb.add_subparsers(dest="action", required=True)
    bi = sbsub.add_parser("build-image", help="build the runtime images (offline, via debootstrap)")
    bi.add_argument("--force", action="store_true")
    er = sbsub.add_parser("egress-rules", help="network + iptables rules for tasks with outbound access "
                                               "(run as root on the Docker engine's host)")
    er.add_argument("--print", action="store_true", help="print them as a shell script instead of applying them")
    er.add_argument("--remove", action="store_true", help="take them away")
    sb.set_defaults(func=cmd_sandbox)
    db = sub.add_parser("db", help="back up or restore the task database (pg_dump / pg_restore)")
    dbsub = db.add_subparsers(dest="action", required=True)
    dbb = dbsub.add_parser("backup", help="pg_dump -Fc into a directory, then prune old backups")
    dbb.add_argument("--dir", default=None, help="target directory (default TEL_BACKUP_DIR)")
    dbb.add_argument("--retention-days", type=int, default=None,
                     help="delete backups older than this (default TEL_BACKUP_RETENTION_DAYS, 0 keeps all)")
    dbr = dbsub.add_parser("restore", help="pg_restore a backup file (stop the router and pools first)")
    dbr.add_argument("file")
    db.set_defaults(func=cmd_db)
    # submit, get, wait, logs, events, cancel, retry, defs: over HTTP, via taskexec.clients.sdk
    client_cli.add_commands(sub)
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
