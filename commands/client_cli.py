"""The user commands of `taskexec`, built on `taskexec.clients.sdk`: submit, get, wait, logs, events, cancel,
retry, defs.

They talk to a router over HTTP (`TEL_API_URL`, default http://127.0.0.1:8081; `TEL_API_TOKEN`, a JWT or an
API key) and need nothing else of the configuration. Output is readable text, or JSON with `--json`.
Exit status: 0 done; 1 the router refused or could not be reached; 2 bad usage or input; 3 the task ended
FAILED, CANCELLED or TIMED_OUT (`wait`, `submit --wait`); 4 `wait` gave up (`--timeout`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from taskexec.core.constants import Priority, Status
from taskexec.core.exceptions import TaskexecError, WaitTimeout

if TYPE_CHECKING:  # imported when a user command runs: `taskexec worker|beat|router` start without them
    from pydantic import BaseModel

    from taskexec.clients.sdk import TaskexecClient
    from taskexec.clients.sdk_models import Event, Task

EXIT_API, EXIT_USAGE, EXIT_TASK_FAILED, EXIT_TIMEOUT = 1, 2, 3, 4


class UsageError(Exception):
    """Bad input from the command line (exit 2)."""


def add_commands(sub: Any) -> None:
    """Add the user commands to the `taskexec` parser's subcommands."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print JSON instead of text")
    common.add_argument("--url", default=None, help="router URL (default: TEL_API_URL or http://127.0.0.1:8081)")

    s = sub.add_parser("submit", parents=[common], help="submit a task (TEL_API_URL, TEL_API_TOKEN)")
    s.add_argument("definition", help="task definition id")
    s.add_argument("--input", default="{}", help="the input as JSON, or @FILE (JSON or YAML), or @- for stdin")
    s.add_argument("--priority", choices=[p.value for p in Priority], default=None)
    s.add_argument("--idempotency-key", default=None, help="a retry with the same key returns the same task")
    s.add_argument("--correlation-id", default=None)
    s.add_argument("--wait", action="store_true", help="wait for a final status and print the task")
    s.add_argument("--timeout", type=float, default=300.0, help="seconds --wait waits (default 300)")
    s.set_defaults(func=command(cmd_submit))
    for name, text in (("get", "show a task"), ("logs", "print a task's stdout and stderr"),
                       ("events", "print a task's history"), ("retry", "run a FAILED or TIMED_OUT task again")):
        p = sub.add_parser(name, parents=[common], help=text)
        p.add_argument("id")
        p.set_defaults(func=command(COMMANDS[name]))
    w = sub.add_parser("wait", parents=[common], help="wait until a task reaches a final status")
    w.add_argument("id")
    w.add_argument("--timeout", type=float, default=300.0, help="seconds (default 300)")
    w.set_defaults(func=command(cmd_wait))
    c = sub.add_parser("cancel", parents=[common], help="cancel a task")
    c.add_argument("id")
    c.add_argument("--reason", default=None)
    c.set_defaults(func=command(cmd_cancel))
    d = sub.add_parser("defs", help="task definitions kept in files")
    dsub = d.add_subparsers(dest="action", required=True)
    da = dsub.add_parser("apply", parents=[common], help="register definitions from YAML/JSON files; unchanged "
                                                         "ones are not registered again")
    da.add_argument("files", nargs="+", metavar="FILE")
    da.set_defaults(func=command(cmd_defs_apply))
    dl = dsub.add_parser("list", parents=[common], help="list definitions (latest versions)")
    dl.add_argument("--search", default=None)
    dl.set_defaults(func=command(cmd_defs_list))


Command = Callable[["TaskexecClient", argparse.Namespace], int]


def command(func: Command) -> Callable[[argparse.Namespace], None]:
    """What the parser calls: `func` run by `run` with a client."""
    return lambda args: run(func, args)


def run(func: Command, args: argparse.Namespace) -> None:
    """Run one user command with a client from the environment; exit with its status."""
    from taskexec.clients.sdk import TaskexecClient

    client = TaskexecClient.from_env()
    if args.url:
        client.url = args.url.rstrip("/")
    try:
        code = func(client, args)
    except UsageError as exc:
        print(f"taskexec: {exc}", file=sys.stderr)
        code = EXIT_USAGE
    except TaskexecError as exc:
        field = f" (field {exc.field})" if exc.field else ""
        print(f"taskexec: {exc.code}: {exc.message}{field}", file=sys.stderr)
        if args.json:
            print(json.dumps(exc.envelope()))
        code = EXIT_API
    except WaitTimeout as exc:
        print(f"taskexec: {exc}", file=sys.stderr)
        code = EXIT_TIMEOUT
    finally:
        client.close()
    raise SystemExit(code)


# ---------------------------------------------------------------- commands


def cmd_submit(client: TaskexecClient, args: argparse.Namespace) -> int:
    sent = client.submit(args.definition, read_value(args.input), priority=args.priority,
                         idempotency_key=args.idempotency_key, correlation_id=args.correlation_id)
    if not args.wait:
        emit(args, sent, f"{'replayed' if sent.replayed else 'submitted'} {sent.id} ({sent.status})")
        return 0
    if not args.json:
        print(f"{'replayed' if sent.replayed else 'submitted'} {sent.id}; waiting...", file=sys.stderr)
    return finished(args, client.wait(sent.id, timeout=args.timeout))


def cmd_get(client: TaskexecClient, args: argparse.Namespace) -> int:
    task = client.get(args.id)
    emit(args, task, describe(task))
    return 0


def cmd_wait(client: TaskexecClient, args: argparse.Namespace) -> int:
    return finished(args, client.wait(args.id, timeout=args.timeout))


def cmd_logs(client: TaskexecClient, args: argparse.Namespace) -> int:
    logs = client.logs(args.id)
    if args.json:
        emit(args, logs, "")
    else:
        sys.stdout.write(logs.stdout)
        sys.stderr.write(logs.stderr)
    return 0


def cmd_events(client: TaskexecClient, args: argparse.Namespace) -> int:
    events = client.events(args.id)
    if args.json:
        print(json.dumps([e.model_dump(mode="json", by_alias=True) for e in events], indent=2))
    else:
        for e in events:
            print(event_line(e))
    return 0


def cmd_cancel(client: TaskexecClient, args: argparse.Namespace) -> int:
    done = client.cancel(args.id, args.reason)
    emit(args, done, f"{done.id} {done.status}")
    return 0


def cmd_retry(client: TaskexecClient, args: argparse.Namespace) -> int:
    done = client.retry(args.id)
    emit(args, done, f"{done.id} {done.status} (runs again)")
    return 0


def cmd_defs_apply(client: TaskexecClient, args: argparse.Namespace) -> int:
    """Every definition of every file; one that is refused is reported and the rest still applied."""
    results: list[dict[str, Any]] = []
    status = 0
    for path in args.files:
        for body in read_definitions(Path(path)):
            name = body.get("id", "?") if isinstance(body, dict) else "?"
            try:
                if not isinstance(body, dict):
                    raise UsageError(f"{path}: a definition must be a mapping")
                definition, created = client.apply_definition(body)
            except TaskexecError as exc:
                field = f" (field {exc.field})" if exc.field else ""
                print(f"{path}: {name}: {exc.code}: {exc.message}{field}", file=sys.stderr)
                results.append({"id": name, "file": path, "error": exc.envelope()["error"]})
                status = EXIT_API
                continue
            results.append({"id": definition.id, "version": definition.version, "changed": created, "file": path})
            if not args.json:
                print(f"{definition.id}: {'registered version' if created else 'unchanged, version'} "
                      f"{definition.version}")
    if args.json:
        print(json.dumps(results, indent=2))
    return status


def cmd_defs_list(client: TaskexecClient, args: argparse.Namespace) -> int:
    page = client.list_definitions(search=args.search, limit=100)
    lines = [f"{d.id:<32} v{d.version:<8} {d.type:<12} {d.name}" for d in page.items]
    emit(args, page, "\n".join(lines) or "no definitions")
    return 0


COMMANDS: dict[str, Command] = {
    "get": cmd_get, "logs": cmd_logs, "events": cmd_events, "retry": cmd_retry,
}


# ---------------------------------------------------------------- input and output


def read_value(text: str) -> Any:
    """`--input`: inline JSON, `@file` (JSON or YAML) or `@-` (standard input)."""
    if text.startswith("@"):
        name = text[1:]
        try:
            raw = sys.stdin.read() if name == "-" else Path(name).read_text()
        except OSError as exc:
            raise UsageError(f"cannot read {name}: {exc.strerror}") from None
        return _parse(raw, name)
    return _parse(text, "--input", yaml_ok=False)


def read_definitions(path: Path) -> list[Any]:
    """The definitions in a file: one mapping, a list of them, or several YAML documents."""
    try:
        raw = path.read_text()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    if path.suffix.lower() == ".json":
        docs = [_parse(raw, str(path), yaml_ok=False)]
    else:
        import yaml

        try:
            docs = [d for d in yaml.safe_load_all(raw) if d is not None]
        except yaml.YAMLError as exc:
            raise UsageError(f"{path}: not valid YAML: {exc}") from None
    return [item for doc in docs for item in (doc if isinstance(doc, list) else [doc])]


def _parse(raw: str, where: str, yaml_ok: bool = True) -> Any:
    try:
        return json.loads(raw)
    except ValueError as exc:
        if not yaml_ok:
            raise UsageError(f"{where}: not valid JSON: {exc}") from None
    import yaml

    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise UsageError(f"{where}: neither JSON nor YAML: {exc}") from None


def emit(args: argparse.Namespace, model: BaseModel, text: str) -> None:
    print(json.dumps(model.model_dump(mode="json", by_alias=True), indent=2) if args.json else text)


def finished(args: argparse.Namespace, task: Task) -> int:
    emit(args, task, describe(task))
    return 0 if task.status == Status.COMPLETED else EXIT_TASK_FAILED


def describe(task: Task) -> str:
    meta = task.execution_metadata or {}
    rows = [("id", task.id), ("definition", f"{task.task_definition_id} v{task.definition_version}"),
            ("type", task.type), ("status", task.status), ("priority", task.priority),
            ("created", task.created_at.isoformat()), ("updated", task.updated_at.isoformat()),
            ("retries", str(task.retry_count)), ("assignee", task.assignee), ("correlation", task.correlation_id),
            ("duration", f"{meta['durationMs']} ms" if "durationMs" in meta else None),
            ("input", _compact(task.input)), ("output", _compact(task.output)),
            ("error", f"{task.error.code}: {task.error.message}" if task.error else None)]
    return "\n".join(f"{k:<12}{v}" for k, v in rows if v not in (None, ""))


def event_line(e: Event) -> str:
    change = f"{e.from_status or ''} -> {e.to_status}" if e.to_status else ""
    who = f"by {e.actor}" if e.actor else ""
    return f"{e.created_at.isoformat(timespec='seconds')}  {e.type:<28} {change:<24} {who}".rstrip()


def _compact(value: Any) -> str | None:
    if value is None:
        return None
    text = json.dumps(value, ensure_ascii=False)
    width = int(os.environ.get("COLUMNS", "0") or 0) or 400
    return text if len(text) <= width else text[: width - 3] + "..."
