"""Every module of the npf package imports, and npf's modules import each other without a cycle.

The import graph is read from the source with ``ast``; an import inside a function counts (it is a
cycle that only waits for the call). ``from npf.x import y`` is an edge to ``npf.x.y`` when that is
a module, else to ``npf.x``."""

from __future__ import annotations

import ast
import graphlib
import importlib
from pathlib import Path

import pytest

import npf

PKG = Path(npf.__file__).resolve().parent


def module_files() -> dict[str, Path]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        parts = ("npf", *path.relative_to(PKG).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = module_files()


def imported_modules(name: str, path: Path) -> set[str]:
    """The npf modules that module ``name`` (file ``path``) imports anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in MODULES:  # `import npf.x.y` of a name inside npf.x.y
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def import_graph() -> dict[str, set[str]]:
    return {name: imported_modules(name, path) for name, path in MODULES.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as e:
        return list(e.args[1])
    return None


@pytest.mark.parametrize("name", list(MODULES))
def test_every_module_imports(name):
    assert importlib.import_module(name).__name__ == name


def test_npf_modules_have_no_import_cycle():
    graph = import_graph()
    # the graph sees imports at module level and inside functions
    assert "npf.config" in graph["npf.stages.offline"] and "npf.envs" in graph["npf.config"]
    assert "npf.pathways.backends" in graph["npf.pathways"] and "npf.checkpoint" in graph["npf.stages.expert"]
    assert find_cycle(graph) is None, " → ".join(find_cycle(graph))


def test_config_reaches_no_stage_and_render_no_stage():
    graph = import_graph()

    def reach(start):
        seen, todo = set(), [start]
        while todo:
            for m in graph[todo.pop()] - seen:
                seen.add(m)
                todo.append(m)
        return seen

    assert not {m for m in reach("npf.config") if m.startswith("npf.stages")}
    assert not {m for m in reach("npf.render") if m.startswith("npf.stages")}


def test_a_cycle_is_found():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) in (
        ["a", "c", "b", "a"],
        ["a", "b", "c", "a"],
        ["b", "a", "c", "b"],
        ["c", "b", "a", "c"],
        ["b", "c", "a", "b"],
        ["c", "a", "b", "c"],
    )
    assert find_cycle({"a": {"b"}, "b": set()}) is None
