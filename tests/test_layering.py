"""Imports point one way: agents -> pipeline -> utils; utils never imports the others."""

from __future__ import annotations

import ast
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
