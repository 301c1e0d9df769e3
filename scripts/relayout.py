#!/usr/bin/env python3
"""Move taskexec's flat modules into sub-packages by role, and the wiring into `commands/` (issue 16).

Deterministic and idempotent: run it on a tree that still has (some of) the old flat modules, e.g. after
merging a branch that was started before the move, and it finishes the job; run it again and it changes
nothing. What it does, in order:

1. creates the packages of `LAYOUT` (an `__init__.py` with the docstring below, if there is none yet);
2. `git mv`s every module still at its old place (`taskexec/<name>.py`) to its package, and
   `taskexec/migrations/` to `taskexec/store/migrations/`;
3. rewrites every tracked text file: `from taskexec import a, b` split by new package, dotted paths
   (`taskexec.manager` -> `taskexec.services.manager`, also in strings, docs, YAML: `celery -A`, entry
   points, mock targets) and file paths (`taskexec/manager.py` -> `taskexec/services/manager.py`);
4. the few build files that list the top-level packages (pyproject.toml, Makefile, Dockerfile) learn
   about `commands/`;
5. re-sorts the imports it touched (`ruff check --select I --fix`).

Usage, from the repository root (or anywhere: it works on the repository it lives in):

    python3 scripts/relayout.py            # do it
    python3 scripts/relayout.py --check    # exit 1 if anything is left to do (changes nothing)

A module added at the top of `taskexec/` after this layout is not moved: add it to `LAYOUT` first.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SELF = Path(__file__).resolve()

# New package -> (its docstring, the old `taskexec.<name>` modules it holds). Listed bottom-up: a package
# may import only from the packages above it in this list (tests/unit/test_layering.py checks it).
LAYOUT: dict[str, tuple[str, list[str]]] = {
    "taskexec.core": (
        "The vocabulary every other part shares: names, errors, settings, limits and the small grammars "
        "(versions, placeholders, rates, address policy) the settings are parsed with.",
        ["constants", "exceptions", "config", "secret_sources", "netpolicy", "limits", "semver", "mapping",
         "integration_spec"],
    ),
    "taskexec.contract": (
        "The typed messages: the public API's models, the pool<->router protocol, and the validation of "
        "definitions and payloads against them.",
        ["schemas", "protocol", "validation"],
    ),
    "taskexec.observability": (
        "Metrics, structured logs and trace context: recorded everywhere, depending on nothing of ours.",
        ["metrics", "logs", "tracing", "metrics_export"],
    ),
    "taskexec.broker": (
        "The message brokers: the one Celery app and its Redis transport, queue statistics, the SQS "
        "publisher.",
        ["celery_app", "broker_redis", "broker_stats", "sqs"],
    ),
    "taskexec.clients": (
        "HTTP clients of the router: the pools' internal client, the public Python SDK, keep-alive "
        "connections.",
        ["client", "sdk", "sdk_models", "keepalive"],
    ),
    "taskexec.store": (
        "PostgreSQL: engine and sessions, models, migrations, the state machine, outbox rows, read-only "
        "statistics, credentials, and the narrow interface the task services are written against.",
        ["db", "models", "migrate", "statemachine", "statechange", "events", "stats", "auth", "visibility",
         "keywatch"],
    ),
    "taskexec.people": (
        "Work for people: who a manual task is offered to, claiming and completing it, its reminders and "
        "escalations, the notifications sent about it.",
        ["assignment", "manual", "manual_timers", "notifications"],
    ),
    "taskexec.services": (
        "What the router does with tasks: submit, start, finish, retries, recovery, queue timeouts, dead "
        "letters, dispatch onto the broker, outbox delivery, and the metrics of committed changes.",
        ["manager", "lifecycle", "hotpath", "recovery", "queue_timeout", "deadletters", "task_metrics",
         "dispatch", "outbox", "metrics_collector"],
    ),
    "commands": (
        "The composition root: the `taskexec` command and what wires the router (`api`), the pools "
        "(`workers`) and the sandbox together (`taskexec up`, backups, Flower's app, the user CLI).",
        ["cli", "up", "backup", "flower_app", "client_cli"],
    ),
}
DIR_MOVES = {"taskexec/migrations": "taskexec/store/migrations"}

MOVES = {f"taskexec.{m}": f"{pkg}.{m}" for pkg, (_, mods) in LAYOUT.items() for m in mods}
OLD_NAMES = sorted((m for _, mods in LAYOUT.values() for m in mods), key=lambda n: (-len(n), n))
_ALT = "|".join(OLD_NAMES)

# `taskexec.manager` -> `taskexec.services.manager` (not `x.taskexec.manager`, not `taskexec.manager_x`)
DOTTED = re.compile(rf"(?<![\w.])taskexec\.({_ALT})(?![\w])")
# `taskexec/manager.py` -> `taskexec/services/manager.py`; `taskexec/migrations` -> `taskexec/store/migrations`
SLASHED = re.compile(rf"(?<![\w.-])taskexec/({_ALT})(?=\.py\b)")
SLASHED_DIRS = {re.compile(rf"(?<![\w.-]){re.escape(old)}(?![\w-])"): new for old, new in DIR_MOVES.items()}
# `from taskexec import a, b as c` (one line or parenthesised)
FROM_PKG = re.compile(r"^([ \t]*)from taskexec import (\([^)]*\)|[^\n]*)$", re.M)
# Prometheus rule groups are called `taskexec.outbox` etc.: names, not modules
DOTTED_SKIP = [re.compile(r"(^|/)(rules\.ya?ml|prometheus-rules\.ya?ml)$")]

# Exact edits of the files that list the top-level packages: (file, old, new), applied when `new` is absent.
BUILD_EDITS = [
    ("pyproject.toml", 'include = ["taskexec*", "api*"', 'include = ["taskexec*", "commands*", "api*"'),
    ("Makefile", "LINT_PATHS  ?= taskexec api", "LINT_PATHS  ?= taskexec commands api"),
    ("Dockerfile", "RUN mkdir -p taskexec api workers sandbox \\\n && touch taskexec/__init__.py api",
     "RUN mkdir -p taskexec commands api workers sandbox \\\n && touch taskexec/__init__.py "
     "commands/__init__.py api"),
    ("Dockerfile", "COPY taskexec ./taskexec\n", "COPY taskexec ./taskexec\nCOPY commands ./commands\n"),
]


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout


def package_dir(pkg: str) -> Path:
    return ROOT.joinpath(*pkg.split("."))


def plan_moves() -> list[tuple[Path, Path]]:
    """(old, new) for every file or folder still at its old place; fails on a half-done move."""
    todo: list[tuple[Path, Path]] = []
    pairs = [(ROOT / "taskexec" / f"{m}.py", package_dir(pkg) / f"{m}.py")
             for pkg, (_, mods) in LAYOUT.items() for m in mods]
    pairs += [(ROOT / old, ROOT / new) for old, new in DIR_MOVES.items()]
    for old, new in pairs:
        if old.exists() and new.exists():
            # a merge can bring back an old path (a branch that added to a moved folder): fold it in by hand
            raise SystemExit(f"relayout: both {old.relative_to(ROOT)} and {new.relative_to(ROOT)} exist; "
                             "merge the old one into the new one, delete it, and run again")
        if old.exists():
            todo.append((old, new))
    return todo


def ensure_packages(check: bool) -> list[str]:
    made = []
    for pkg, (doc, _) in LAYOUT.items():
        init = package_dir(pkg) / "__init__.py"
        if init.exists():
            continue
        made.append(str(init.relative_to(ROOT)))
        if not check:
            init.parent.mkdir(parents=True, exist_ok=True)
            body = textwrap.fill(doc, width=112, break_on_hyphens=False)
            init.write_text(f'"""{body}\n"""\n' if "\n" in body else f'"""{body}"""\n')
            git("add", str(init.relative_to(ROOT)))
    return made


def rewrite_from_pkg(m: re.Match[str]) -> str:
    indent, names = m.group(1), m.group(2).strip().strip("()")
    items = [n.strip() for n in names.replace("\n", " ").split(",") if n.strip()]
    if not any(f"taskexec.{i.split()[0]}" in MOVES for i in items):
        return m.group(0)
    groups: dict[str, list[str]] = {}
    for item in items:
        target = MOVES.get(f"taskexec.{item.split()[0]}")
        parent = target.rpartition(".")[0] if target else "taskexec"
        groups.setdefault(parent, []).append(item)
    return "\n".join(f"{indent}from {parent} import {', '.join(sorted(names_))}"
                     for parent, names_ in sorted(groups.items()))


def rewrite_text(rel: str, text: str) -> str:
    if rel.endswith(".py"):
        text = FROM_PKG.sub(rewrite_from_pkg, text)
    if not any(p.search(rel) for p in DOTTED_SKIP):
        text = DOTTED.sub(lambda m: MOVES[f"taskexec.{m.group(1)}"], text)
    text = SLASHED.sub(lambda m: MOVES[f"taskexec.{m.group(1)}"].replace(".", "/"), text)
    for pattern, new in SLASHED_DIRS.items():
        text = pattern.sub(new, text)
    return text


def tracked_text_files() -> list[Path]:
    out = []
    for rel in git("ls-files", "-z").split("\0"):
        path = ROOT / rel
        if not rel or not path.is_file() or path.resolve() == SELF:
            continue
        out.append(path)
    return sorted(out)


def rewrite_files(check: bool) -> list[str]:
    changed = []
    for path in tracked_text_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        rel = str(path.relative_to(ROOT))
        new = rewrite_text(rel, text)
        for file, old, repl in BUILD_EDITS:
            if rel == file and repl not in new:
                new = new.replace(old, repl)
        if new != text:
            changed.append(rel)
            if not check:
                path.write_text(new, encoding="utf-8")
    return changed


def long_lines(files: list[str], limit: int = 120) -> list[str]:
    """Python lines the longer paths pushed over ruff's limit: to wrap by hand (`make lint` names them too)."""
    out = []
    for rel in files:
        if rel.endswith(".py"):
            for n, line in enumerate((ROOT / rel).read_text(encoding="utf-8").splitlines(), 1):
                if len(line) > limit and any(new in line for new in MOVES.values()):
                    out.append(f"{rel}:{n}")
    return out


def sort_imports(files: list[str]) -> None:
    py = [f for f in files if f.endswith(".py")]
    if not py:
        return
    ruff = ROOT / ".venv" / "bin" / "ruff"
    exe = str(ruff) if ruff.exists() else shutil.which("ruff")
    if exe is None:
        print("relayout: ruff not found, imports left unsorted (run `make lint` after `make setup`)")
        return
    subprocess.run([exe, "check", "--quiet", "--select", "I", "--fix", "--exit-zero", *py], cwd=ROOT, check=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="report what is left to do, change nothing")
    args = ap.parse_args()

    made = ensure_packages(args.check)
    moves = plan_moves()
    for old, new in moves:
        if not args.check:
            new.parent.mkdir(parents=True, exist_ok=True)
            git("mv", str(old.relative_to(ROOT)), str(new.relative_to(ROOT)))
    changed = rewrite_files(args.check)
    if not args.check:
        sort_imports(changed)
        for where in long_lines(changed):
            print(f"too long {where}  (wrap it by hand)")

    for f in made:
        print(f"package  {f}")
    for old, new in moves:
        print(f"move     {old.relative_to(ROOT)} -> {new.relative_to(ROOT)}")
    for f in changed:
        print(f"rewrite  {f}")
    if not (made or moves or changed):
        print("relayout: nothing to do")
        return 0
    return 1 if args.check else 0


if __name__ == "__main__":
    sys.exit(main())
