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


# hop/plan.py is sans-IO too; hop/route.py builds TLS contexts from files, so it is loading.
SANS_IO_MODULES = ("hop/plan.py",)
MODULES = sorted(
    [p for package in SANS_IO for p in (SRC / package).rglob("*.py")]
    + [SRC / module for module in SANS_IO_MODULES]
)


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


# --- protocol facts live in proto/ (architecture.md, "One home for every fact") --------------

ALL_MODULES = sorted(SRC.rglob("*.py"))
# Certificates are DER, not PostgreSQL's protocol: tls/ reads lengths and bytes of its own.
BYTE_ARITHMETIC_ALLOWED = ("proto", "tls")


def protocol_literals(source: str, label: str, *, byte_arithmetic_allowed: bool) -> list[str]:
    """``label:line what`` for each PostgreSQL wire fact spelled out instead of named.

    A one-letter bytes literal is a message type or transaction status (``b"Z"``, ``b"I"``);
    ``struct`` and ``int.from_bytes``/``to_bytes`` are frame layouts; all belong in
    ``proto/codes.py`` and ``proto/codec.py``.
    """
    found: list[str] = []
    for node in ast.walk(ast.parse(source, filename=label)):
        if isinstance(node, ast.Constant) and isinstance(node.value, bytes):
            if len(node.value) == 1 and chr(node.value[0]).isalpha():
                found.append(f"{label}:{node.lineno} message byte {node.value!r}")
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            if "struct" in names:
                found.append(f"{label}:{node.lineno} imports struct")
        elif (
            not byte_arithmetic_allowed
            and isinstance(node, ast.Attribute)
            and node.attr in ("from_bytes", "to_bytes")
        ):
            found.append(f"{label}:{node.lineno} {node.attr}")
    return found


@pytest.mark.parametrize(
    "module",
    [m for m in ALL_MODULES if m.relative_to(SRC).parts[0] != "proto"],
    ids=lambda p: str(p.relative_to(SRC)),
)
def test_no_protocol_literals_outside_proto(module: Path) -> None:
    label = str(module.relative_to(SRC))
    allowed = module.relative_to(SRC).parts[0] in BYTE_ARITHMETIC_ALLOWED
    source = module.read_text(encoding="utf-8")
    assert protocol_literals(source, label, byte_arithmetic_allowed=allowed) == []


def test_the_literal_check_catches_violations() -> None:
    source = (
        'import struct\nif kind == b"Z":\n    pass\nn = int.from_bytes(b[:4], "big")\n'
        'ok = b"\\0" + b"ab" + b"1"\n'
    )
    assert protocol_literals(source, "x.py", byte_arithmetic_allowed=False) == [
        "x.py:1 imports struct",
        "x.py:2 message byte b'Z'",
        "x.py:4 from_bytes",
    ]
    assert protocol_literals(source, "x.py", byte_arithmetic_allowed=True) == [
        "x.py:1 imports struct",
        "x.py:2 message byte b'Z'",
    ]


# --- the structure drawn from imports has no cycles ------------------------------------------


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(sources: dict[str, tuple[str, bool]]) -> dict[str, set[str]]:
    """Module → the project modules it imports at run time (``TYPE_CHECKING`` blocks and
    imports inside functions are deferred, so they cannot close a cycle at import time).

    ``sources`` maps a module name to (source text, is a package ``__init__``). ``from pkg
    import sub`` where ``pkg.sub`` is a module counts as an import of ``pkg.sub`` only: the
    package's ``__init__`` runs first either way, which is how packages work, not a cycle.
    """
    graph: dict[str, set[str]] = {}
    for name, (source, is_package) in sources.items():
        package = name if is_package else name.rpartition(".")[0]
        deps: set[str] = set()
        for node in _run_time_imports(ast.parse(source)):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name in sources}
                continue
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            submodules = {f"{base}.{a.name}" for a in node.names} & sources.keys()
            if submodules:
                deps |= submodules
            elif base in sources:
                deps.add(base)
        deps.discard(name)
        graph[name] = deps
    return graph


def _run_time_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Module-level imports, skipping ``if TYPE_CHECKING:`` bodies and function bodies."""
    found: list[ast.Import | ast.ImportFrom] = []
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif isinstance(node, ast.If):
            if not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                pending += node.body + node.orelse
        elif isinstance(node, ast.Try):
            pending += node.body + node.orelse + node.finalbody
            pending += [s for handler in node.handlers for s in handler.body]
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one member (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _project_sources() -> dict[str, tuple[str, bool]]:
    return {
        module_name(p): (p.read_text(encoding="utf-8"), p.name == "__init__.py")
        for p in ALL_MODULES
    }


def test_modules_import_each_other_without_cycles() -> None:
    assert cycles(import_graph(_project_sources())) == []


def test_packages_import_each_other_without_cycles() -> None:
    def package(module: str) -> str:
        return ".".join(module.split(".")[:2])

    packages: dict[str, set[str]] = {}
    for module, deps in import_graph(_project_sources()).items():
        packages.setdefault(package(module), set()).update(
            package(d) for d in deps if package(d) != package(module)
        )
    assert cycles(packages) == []


def test_the_cycle_check_catches_cycles() -> None:
    sources = {
        "p": ("from p import a\n", True),
        "p.a": ("from p.b import x\n", False),
        "p.b": ("from . import c\nif TYPE_CHECKING:\n    from p import a\n", False),
        "p.c": ("import p.a\n", False),
        "p.d": ("def f():\n    from p import a\n", False),
    }
    graph = import_graph(sources)
    assert graph == {"p": {"p.a"}, "p.a": {"p.b"}, "p.b": {"p.c"}, "p.c": {"p.a"}, "p.d": set()}
    assert cycles(graph) == [["p.a", "p.b", "p.c"]]
