"""The layering holds: no module under pipelines/ imports the CLI, captioning/ imports
no Beam, and no two modules import each other, directly or round a longer cycle.

Imports are read from the source (ast), top level and inside functions alike, so a
cycle hidden in a function body counts too."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("captioning", "pipelines")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports() -> dict[str, set[str]]:
    """module -> the project modules it imports."""
    modules = {
        _module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")
    }
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for target in targets:
                # The longest project module the import names ("from a import b" may
                # name module a.b or attribute b of a).
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    found.add(target)
        graph[name] = found
    return graph


def test_pipelines_never_import_the_cli_and_the_library_never_imports_beam():
    graph = _imports()
    upward = sorted(
        (name, target)
        for name, targets in graph.items()
        if name.startswith("pipelines")
        for target in targets
        if target.startswith("captioning.cli")
    )
    assert upward == []
    beam = sorted(
        str(path.relative_to(ROOT))
        for path in (ROOT / "captioning").rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if (
            isinstance(node, ast.Import)
            and any(a.name.startswith("apache_beam") for a in node.names)
        )
        or (isinstance(node, ast.ImportFrom) and (node.module or "").startswith("apache_beam"))
    )
    assert beam == []


def test_there_is_no_import_cycle():
    graph = _imports()
    cycles = []
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(name: str) -> None:
        state[name] = "open"
        stack.append(name)
        for target in sorted(graph.get(name, ())):
            # A package's __init__ importing its own submodules is how packages work.
            if target.startswith(name + "."):
                continue
            if state.get(target) == "open":
                cycles.append([*stack[stack.index(target) :], target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name)
    assert cycles == []
