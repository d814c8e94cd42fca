"""The import graph keeps its layers: a pure core, the engine, storage, and the edges.

Each rule names a layer (modules of ``syncrecon``) and what it may import from ``syncrecon``.
Imports are read from the source (every ``import`` statement, function-local ones included),
so a lazy import that crosses a layer is caught as well as a top-level one.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import syncrecon

SRC = Path(syncrecon.__file__).parent

CORE = {
    "syncrecon._policy",
    "syncrecon._models",
    "syncrecon._sync",
    "syncrecon._drift",
    "syncrecon._codec",
    "syncrecon._clock",
    "syncrecon._exceptions",
    "syncrecon._retention",
    "syncrecon._connector",  # the connector protocol and the calls' retry and metering
    "syncrecon._metering",
}
"""Decisions and values: no storage, no HTTP front door, no engine, no operator surface."""


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """The ``syncrecon`` modules ``path`` imports (absolute names)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("syncrecon"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if not target.startswith("syncrecon"):
                continue
            found.add(target)
            # ``from . import _codec`` imports a module, not a name of the package.
            found.update(
                f"{target}.{a.name}"
                for a in node.names
                if (SRC.parent / target.replace(".", "/") / f"{a.name}.py").exists()
            )
    return found


GRAPH = {_module_name(p): _imports(p) for p in SRC.rglob("*.py")}


def _in(module: str, *prefixes: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_the_graph_was_read() -> None:
    assert "syncrecon._reconciler" in GRAPH
    assert "syncrecon._cycle._run" in GRAPH  # the cycle's steps: engine modules too
    assert "syncrecon._policy" in GRAPH["syncrecon._sync"]
    assert "syncrecon._codec" in GRAPH["syncrecon._drift"]  # ``from . import _codec``


@pytest.mark.parametrize("module", sorted(CORE))
def test_the_core_imports_only_the_core(module: str) -> None:
    outside = {m for m in GRAPH[module] if m != "syncrecon" and m not in CORE}
    assert not outside, f"{module} imports {sorted(outside)} from outside the core"


EDGES = (
    "syncrecon.webhooks",
    "syncrecon.queue",
    "syncrecon.dashboard",
    "syncrecon.web",
    "syncrecon.worker",
    "syncrecon.scheduling",
    "syncrecon.integrations",
    "syncrecon.metrics",
    "syncrecon.connectors",
    "syncrecon.http",
    "syncrecon.testing",
    "syncrecon.__main__",
    "syncrecon._demo",
    "syncrecon._bench",
)


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if _in(m, "syncrecon.storage")))
def test_storage_imports_the_core_and_itself_only(module: str) -> None:
    outside = {
        m
        for m in GRAPH[module]
        if m != "syncrecon" and m not in CORE and not _in(m, "syncrecon.storage")
    }
    assert not outside, f"{module} imports {sorted(outside)}"


@pytest.mark.parametrize(
    "module",
    [
        "syncrecon._reconciler",
        "syncrecon._stash",
        "syncrecon._write_path",  # the one apply path: every writer's, the edges' too
        *sorted(m for m in GRAPH if _in(m, "syncrecon._cycle")),
    ],
)
def test_the_engine_does_not_reach_into_the_edges(module: str) -> None:
    edges = {m for m in GRAPH[module] if _in(m, *EDGES)}
    assert not edges, f"{module} imports {sorted(edges)}"


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if _in(m, "syncrecon.webhooks")))
def test_the_fast_loop_does_not_import_the_operator_surface(module: str) -> None:
    wrong = {
        m
        for m in GRAPH[module]
        if _in(
            m, "syncrecon.queue", "syncrecon.dashboard", "syncrecon.web", "syncrecon._reconciler"
        )
    }
    assert not wrong, f"{module} imports {sorted(wrong)}"


def test_adapters_share_helpers_through_a_private_module_not_each_other() -> None:
    # wsgi.py and web.py once imported private helpers of webhooks/asgi.py.
    for module in ("syncrecon.webhooks.wsgi", "syncrecon.web"):
        assert "syncrecon.webhooks.asgi" not in GRAPH[module]


def test_import_syncrecon_loads_no_backend_front_door_or_engine() -> None:
    code = (
        "import sys, syncrecon; "
        "print(','.join(sorted(m for m in sys.modules if m.startswith('syncrecon'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    loaded = set(out.split(","))
    assert "syncrecon._policy" in loaded
    heavy = {
        m
        for m in loaded
        if _in(
            m,
            "syncrecon.storage.sqlite",
            "syncrecon.storage.memory",
            "syncrecon.webhooks",
            "syncrecon.queue",
            "syncrecon.dashboard",
            "syncrecon.web",
            "syncrecon.http",
            "syncrecon.connectors",
            "syncrecon.integrations",
        )
    }
    assert not heavy, f"import syncrecon loads {sorted(heavy)}"
