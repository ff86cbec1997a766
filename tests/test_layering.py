"""Imports point one way: agents -> pipeline -> utils; utils never imports the others."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {"utils": {"pipeline", "agents"}, "pipeline": {"agents"}, "agents": set()}


def _imported_packages(source: Path) -> set[str]:
    tree = ast.parse(source.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_lower_layers(package: str) -> None:
    for source in (ROOT / package).rglob("*.py"):
        bad = _imported_packages(source) & FORBIDDEN[package]
        assert not bad, f"{source.relative_to(ROOT)} imports {sorted(bad)}"


PRODUCT = ("utils", "pipeline", "agents")
SCRIPT_MODULE = Path("utils/redis_queue/scripts")
# How a Lua script is run with redis-py; only the script module may do any of it.
_RUNS_SCRIPTS = re.compile(
    r"\.(evalsha|eval_ro|evalsha_ro|register_script|script_load|fcall|eval)\("
)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """Module -> the product modules it imports (at any depth: module level, inside a
    function, or under TYPE_CHECKING); `from pkg import sub` counts as importing sub."""
    files = {_module_name(p): p for pkg in PRODUCT for p in (ROOT / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    target = alias.name
                    while target and target not in files:
                        target = target.rpartition(".")[0]
                    if target:
                        edges.add(target)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*anchor, *([node.module] if node.module else [])])
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    edges.add(sub if sub in files else base)
        graph[name] = {e for e in edges if e in files and e != name}
    return graph


def test_the_import_graph_has_no_cycle() -> None:
    graph = _import_graph()
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            cycle = [*path[path.index(name) :], name]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if name in done:
            return
        for target in sorted(graph[name]):
            visit(target, [*path, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])


def test_only_the_script_module_runs_scripts_or_builds_their_arguments() -> None:
    """KEYS/ARGV are built, and scripts run, in utils/redis_queue/scripts/ alone."""
    offenders = []
    for pkg in (*PRODUCT, "bench"):
        for source in (ROOT / pkg).rglob("*.py"):
            if SCRIPT_MODULE in source.relative_to(ROOT).parents:
                continue
            for number, line in enumerate(source.read_text().splitlines(), 1):
                if _RUNS_SCRIPTS.search(line) or re.search(r"\b(KEYS|ARGV)\b", line):
                    offenders.append(f"{source.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
