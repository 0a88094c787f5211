"""Imports run one way, downward: no module imports, at load time, a package above it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src" / "lamina"

RANK = {
    "backend": 0, "errors": 0, "io": 0, "lazy": 0, "parallel": 1, "autograd": 2, "functional": 3, "fft": 3.5,
    "linalg": 4, "special": 4,
    "data": 3, "text": 4, "nn": 4, "distributions": 4, "optim": 5, "models": 5, "func": 5, "analysis": 5, "vision": 4.5,
    "amp": 5, "sparse": 3.5, "distributed": 5, "manifolds": 3.5,
    "saving": 6, "export": 6, "rl": 6, "train": 7, "cli": 8, "keras": 8, "__main__": 9,
}


def _part(path: Path) -> str:
    return path.relative_to(SOURCE).parts[0].removesuffix(".py")


def _load_time_imports(path: Path) -> set[str]:
    """The lamina packages a module imports in its body (not inside functions)."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "lamina":
            parts = node.module.split(".")
            found.update([parts[1]] if len(parts) > 1 else [alias.name for alias in node.names])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("lamina."))
    return found


MODULES = sorted(p for p in SOURCE.rglob("*.py") if _part(p) != "__init__")


def test_every_package_has_a_rank():
    assert {_part(p) for p in MODULES} <= set(RANK)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SOURCE)))
def test_imports_point_downward(path):
    own = _part(path)
    for imported in _load_time_imports(path):
        if imported in RANK and imported != own:
            assert RANK[imported] < RANK[own] or RANK[imported] == RANK[own] == 0, (
                f"{path.relative_to(SOURCE)} ({own}, rank {RANK[own]}) imports {imported} (rank {RANK[imported]})")
