"""The sans-IO layers never import I/O, clocks or processes (architecture.md, Layers)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "pggate"
SANS_IO = ("proto", "hba", "auth", "transport", "login")
FORBIDDEN = frozenset({"asyncio", "socket", "selectors", "time", "subprocess", "os"})


def forbidden_imports(source: str, label: str) -> list[str]:
    """``label:line imports name`` for every absolute import of a forbidden module."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source, filename=label)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [
            f"{label}:{node.lineno} imports {name}"
            for name in names
            if name.split(".")[0] in FORBIDDEN
        ]
    return found


MODULES = sorted(p for package in SANS_IO for p in (SRC / package).rglob("*.py"))


@pytest.mark.parametrize("module", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_sans_io_module_imports(module: Path) -> None:
    label = str(module.relative_to(SRC))
    assert forbidden_imports(module.read_text(encoding="utf-8"), label) == []


@pytest.mark.parametrize("module", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_sans_io_module_does_not_reach_up_into_the_server(module: Path) -> None:
    tree = ast.parse(module.read_text(encoding="utf-8"))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {name for name in imported if name.startswith("pggate.server")}


def test_every_sans_io_package_is_checked() -> None:
    assert {p.parent.name for p in MODULES} >= set(SANS_IO)


def test_the_check_catches_violations() -> None:
    source = (
        "import os.path\nfrom time import monotonic\nimport asyncio as aio\n"
        "from . import os\nimport ospath\nif True:\n    import subprocess\n"
    )
    assert forbidden_imports(source, "x.py") == [
        "x.py:1 imports os.path",
        "x.py:2 imports time",
        "x.py:3 imports asyncio",
        "x.py:7 imports subprocess",
    ]
