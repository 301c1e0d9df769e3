"""The import graph keeps the layout's promises (read from the source with `ast`, nothing is imported).

* no import cycle between modules (imports inside functions and under TYPE_CHECKING count too: a cycle
  hidden in a function is still a cycle);
* `taskexec/` is the shared core: none of its modules imports `api`, `workers`, `sandbox` or `commands`,
  and inside it a package imports only from the packages below it in `TASKEXEC_LAYERS`;
* `commands/` is the composition root: the only package that imports `api`; `workers` never does;
* `sandbox/` knows nothing of taskexec, the router, the pools, Celery, Flask or the database.

The rule functions take a graph, so the last tests feed them made-up graphs to show each one fails.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("taskexec", "commands", "api", "workers", "sandbox")
# Bottom-up: each package of taskexec/ may import from the ones before it (and from itself), never after.
TASKEXEC_LAYERS = ("core", "contract", "observability", "broker", "clients", "store", "people", "services")
SANDBOX_MUST_NOT_IMPORT = ("taskexec", "commands", "api", "workers", "celery", "kombu", "flask", "sqlalchemy",
                           "alembic", "psycopg")

Edge = tuple[str, str, int]  # (importing module, imported module or outside top-level name, line)


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for every module of our packages (Alembic's migration scripts aside)."""
    out = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root).with_suffix("")
            if "migrations" in rel.parts:
                continue
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            out[".".join(parts)] = path
    return out


def _resolve(name: str, known: dict[str, Path]) -> str:
    """The module `name` lands in: the longest known prefix (an attribute import names its module)."""
    probe = name
    while probe and probe not in known:
        probe = probe.rpartition(".")[0]
    return probe or name.split(".")[0]


def imports(module: str, path: Path, known: dict[str, Path]) -> list[Edge]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    edges: list[Edge] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Import | ast.ImportFrom):
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            # `from pkg import sub` imports the module pkg.sub; `from mod import name` imports mod
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        for name in names:
            target = _resolve(name, known) if name.split(".")[0] in PACKAGES else name.split(".")[0]
            if target != module:
                edges.append((module, target, node.lineno))
    return edges


def import_graph(root: Path = ROOT) -> list[Edge]:
    known = module_files(root)
    return sorted({e for m, p in known.items() for e in imports(m, p, known)})


def _top(name: str) -> str:
    return name.split(".")[0]


def cycles(edges: Iterable[Edge]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan, iterative)."""
    graph: dict[str, set[str]] = {}
    for a, b, _ in edges:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    group = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        group.append(w)
                        if w == v:
                            break
                    if len(group) > 1:
                        found.append(sorted(group))
    return sorted(found)


def layer_of(module: str) -> int | None:
    """The rank of a taskexec module's package in TASKEXEC_LAYERS (None: the root package, or not taskexec)."""
    parts = module.split(".")
    if parts[0] != "taskexec" or len(parts) < 2:
        return None
    return TASKEXEC_LAYERS.index(parts[1]) if parts[1] in TASKEXEC_LAYERS else -1


def violations(edges: Iterable[Edge]) -> list[str]:
    """Every import that breaks a layering rule, as `module:line -> target (rule)`."""
    out = []
    for src, dst, line in edges:
        where = f"{src}:{line} -> {dst}"
        s_top, d_top = _top(src), _top(dst)
        if s_top == "taskexec" and d_top in ("api", "workers", "sandbox", "commands"):
            out.append(f"{where} (taskexec is the shared core: it is used by, never uses, {d_top})")
        if d_top == "api" and s_top not in ("api", "commands"):
            out.append(f"{where} (only the composition root, commands/, imports api)")
        if s_top == "sandbox" and d_top in SANDBOX_MUST_NOT_IMPORT:
            out.append(f"{where} (sandbox knows nothing of {d_top})")
        s_rank, d_rank = layer_of(src), layer_of(dst)
        if s_rank is not None and d_rank is not None and d_rank > s_rank:
            out.append(f"{where} (runs upward: {TASKEXEC_LAYERS[d_rank]} is above {TASKEXEC_LAYERS[s_rank]})")
    return out


def test_the_graph_is_read() -> None:
    edges = import_graph()
    assert any(s == "taskexec.services.manager" and d == "taskexec.store.models" for s, d, _ in edges)
    assert any(s == "commands.cli" and d == "api" for s, d, _ in edges)
    assert any(s == "sandbox.runner" and d == "docker" for s, d, _ in edges)


def test_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


def test_layering_rules() -> None:
    assert violations(import_graph()) == []


def test_every_taskexec_module_is_in_a_layer() -> None:
    """A new module goes into the package of its role (the root package holds only __init__)."""
    loose = [m for m in module_files() if m != "taskexec" and layer_of(m) == -1]
    assert loose == []


# The rules themselves: each made-up graph breaks one.

def test_a_cycle_is_found() -> None:
    edges = [("taskexec.services.a", "taskexec.services.b", 1), ("taskexec.services.b", "taskexec.services.c", 1),
             ("taskexec.services.c", "taskexec.services.a", 9), ("taskexec.services.c", "taskexec.core.x", 2)]
    assert cycles(edges) == [["taskexec.services.a", "taskexec.services.b", "taskexec.services.c"]]
    assert cycles(edges[1:]) == []


def test_each_rule_fails_when_broken() -> None:
    broken = {
        ("taskexec.store.db", "workers.app", 3): "shared core",
        ("taskexec.core.config", "commands.cli", 3): "shared core",
        ("workers.manual", "api.errors", 5): "only the composition root",
        ("sandbox.runner", "celery", 7): "sandbox knows nothing of celery",
        ("sandbox.runner", "taskexec.core.limits", 7): "sandbox knows nothing of taskexec",
        ("taskexec.store.models", "taskexec.services.manager", 1): "runs upward",
        ("taskexec.core.config", "taskexec.contract.schemas", 1): "runs upward",
    }
    for edge, rule in broken.items():
        found = violations([edge])
        assert found and rule in found[0], (edge, found)
    allowed = [("commands.cli", "api", 1), ("api.tasks", "taskexec.services.manager", 1),
               ("workers.automated", "sandbox", 1), ("taskexec.services.manager", "taskexec.store.models", 1),
               ("taskexec.clients.sdk", "taskexec", 1), ("sandbox.runner", "docker", 1)]
    assert violations(allowed) == []
