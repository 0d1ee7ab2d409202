#!/usr/bin/env python3
"""The layering, checked (make lint): which package may import which, which third-party libraries each
may import, and no import cycle between modules.

    schemas      Avro schemas and the wire format
    domain       the hub's rules, free of I/O, and the ports (Protocols)
    policies     the sharing agreements and the decisions
    streams      the stages' and operations' logic, through ports
    producers    the agency SDK and the simulator
    adapters     Kafka, SQL, in-memory: the technologies behind the ports
    gateway      the HTTP adapter
    tiphub       the composition root: settings, the container, the CLI

A package imports only the packages listed for it below. Broker clients, database drivers, the HTTP
framework and the CLI libraries are imported only by the package named for each in THIRD_PARTY (other
third-party libraries are not restricted). The domain imports nothing that does I/O and opens no file.
Imports under `if TYPE_CHECKING:` count: a type is a dependency too. An import the statements do not show
(`importlib.import_module`, `__import__`, `exec`, `eval`) is refused outside DYNAMIC_IMPORTS. Run from the
repository root; exit status 1 lists every breach.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

PACKAGES = ("schemas", "domain", "policies", "streams", "producers", "adapters", "gateway", "tiphub")

MAY_IMPORT: dict[str, set[str]] = {
    "schemas": set(),
    "domain": {"schemas"},
    "policies": {"domain", "schemas"},
    "streams": {"domain", "policies", "schemas"},
    "producers": {"domain", "schemas", "adapters"},
    "adapters": {"domain", "policies", "schemas", "streams"},
    "gateway": {"adapters", "domain", "policies", "producers", "schemas", "streams"},
    "tiphub": set(PACKAGES),
}

# The settings schema is the composition root's, but the edges it configures read it too.
CONFIGURATION = "tiphub.settings"
READ_CONFIGURATION = {"adapters", "gateway"}

# third-party module -> the packages (or dotted sub-packages) that alone may import it
THIRD_PARTY: dict[str, tuple[str, ...]] = {
    "aiokafka": ("adapters.kafka",),
    "kafka": ("adapters.kafka",),
    "faust": ("adapters.kafka",),
    "sqlite3": ("adapters.sql",),
    "psycopg": ("adapters.sql",),
    "fastapi": ("gateway",),
    "starlette": ("gateway",),
    "sse_starlette": ("gateway",),
    "uvicorn": ("gateway", "tiphub"),
    "prometheus_client": ("gateway",),
    "typer": ("tiphub",),
    "rich": ("tiphub",),
}

# The domain does no I/O: none of these, whatever the list above allows.
DOMAIN_FORBIDDEN = (
    "os",
    "io",
    "socket",
    "subprocess",
    "urllib",
    "http",
    "httpx",
    "requests",
    "asyncio",
    "pathlib",
    "shutil",
    "tempfile",
    "glob",
)
DOMAIN_FORBIDDEN_CALLS = ("open",)

# Calls that import or run code the import statements do not show, and the modules allowed them: the stage
# list names each handler module (streams/stages.py), loaded here; it must name a module of streams.agents.
HIDDEN_IMPORTS = ("import_module", "__import__", "exec", "eval")
DYNAMIC_IMPORTS = {"streams.stage_context"}

# Breaches tolerated for now, each (importing module, module or library imported): the exact module, so an
# entry lets nothing else in, and a comment says where the breach goes. Issue 15 emptied it. The list only
# shrinks: an entry that no longer breaches is itself reported, so it is deleted when its breach goes.
KNOWN: set[tuple[str, str]] = set()


def modules(root: Path) -> Iterator[tuple[str, Path]]:
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            yield name, path


def imports(path: Path, module: str) -> Iterator[tuple[str, int, bool]]:
    """Every module an import statement names (a relative import resolved), with its line; the third
    item says the name may be a module imported from a package (`from domain import crypto`)."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno, False
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield base, node.lineno, False
            for alias in node.names:  # `from package import module`
                yield f"{base}.{alias.name}", node.lineno, True


def calls(path: Path) -> Iterator[tuple[str, int]]:
    """The name of every function called by name or as an attribute (`importlib.import_module(...)`)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name):
                yield func.id, node.lineno
            elif isinstance(func, ast.Attribute):
                yield func.attr, node.lineno


def owner(module: str) -> str:
    return module.split(".")[0]


def allowed_third_party(importer: str, top: str) -> bool:
    return any(importer == p or importer.startswith(p + ".") for p in THIRD_PARTY[top])


def check(root: Path) -> list[str]:
    known = {name for name, _ in modules(root)}
    graph: dict[str, set[str]] = {}
    breaches: list[tuple[str, str, str]] = []  # (importer, imported, message)
    for module, path in modules(root):
        package = owner(module)
        edges = graph.setdefault(module, set())
        for imported, line, from_package in imports(path, module):
            top = owner(imported)
            where = f"{path.relative_to(root)}:{line}"
            if top in PACKAGES and imported in known and imported != module:
                edges.add(imported)
            if from_package:
                continue
            if top in PACKAGES:
                configuration = imported == CONFIGURATION and package in READ_CONFIGURATION
                if top != package and top not in MAY_IMPORT[package] and not configuration:
                    breaches.append((module, imported, f"{where}: {package} may not import {top} ({imported})"))
            elif top in THIRD_PARTY and not allowed_third_party(module, top):
                breaches.append((module, top, f"{where}: {module} may not import {top} (only {THIRD_PARTY[top]})"))
            elif package == "domain" and top in DOMAIN_FORBIDDEN:
                breaches.append((module, top, f"{where}: the domain does no I/O, yet imports {top}"))
        for name, line in calls(path):
            where = f"{path.relative_to(root)}:{line}"
            if name in HIDDEN_IMPORTS and module not in DYNAMIC_IMPORTS:
                breaches.append((module, name, f"{where}: {module} calls {name}, an import the check cannot see"))
            elif package == "domain" and name in DOMAIN_FORBIDDEN_CALLS:
                breaches.append((module, name, f"{where}: the domain does no I/O, yet calls {name}"))
    problems = sorted({message for importer, imported, message in breaches if (importer, imported) not in KNOWN})
    seen = {(importer, imported) for importer, imported, _ in breaches}
    problems += [f"KNOWN entry {entry} no longer breaches: delete it" for entry in sorted(KNOWN - seen)]
    problems += [f"import cycle: {' -> '.join(cycle)}" for cycle in cycles(graph)]
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append([*sorted(component), min(component)])

    sys.setrecursionlimit(10_000)
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def main() -> int:
    problems = check(Path.cwd())
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} layering problem(s): see scripts/check_layers.py for the layers")
        return 1
    print("layering: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
