"""The dispatcher's modules import one another without a cycle, and only at module level.

Read from the source with ``ast`` (nothing is imported): every ``import`` of a ``dispatcher`` module,
``TYPE_CHECKING`` blocks included, is an edge, and so is the package a module sits in (importing
``dispatcher.sandbox.port`` runs ``dispatcher/sandbox/__init__.py`` first). An import inside a
function is refused outright: that is how a cycle hides.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module
    line: int
    in_function: bool


def module_of(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path) -> dict[str, Path]:
    return {module_of(root, path): path for path in sorted(root.rglob("*.py"))}


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known: set[str]) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:  # relative: from the module's package, one level up per extra dot
        package = module.split(".") if is_package else module.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join([*package, *([node.module] if node.module else [])])
    else:
        base = node.module or ""
    # `from pkg import name`: name is a module of pkg, or something pkg defines.
    return [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]


def imports(root: Path) -> list[Import]:
    known = set(modules(root))
    found: list[Import] = []
    for module, path in modules(root).items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)]
        nested = {id(inner) for f in functions for inner in ast.walk(f) if inner is not f}
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            for target in _targets(node, module, path.name == "__init__.py", known):
                if target.split(".")[0] == root.name:
                    found.append(Import(module, target, node.lineno, id(node) in nested))
    return found


def graph(root: Path) -> dict[str, set[str]]:
    """Module → the modules importing it runs: what it imports, their packages, and its own packages."""
    edges: dict[str, set[str]] = {module: set() for module in modules(root)}

    def with_packages(name: str) -> set[str]:
        parts = name.split(".")
        return {".".join(parts[:i]) for i in range(1, len(parts) + 1)}

    for module in edges:
        edges[module] |= with_packages(module) - {module}
    for imp in imports(root):
        edges[imp.source] |= with_packages(imp.target) - {imp.source}
    return {m: {t for t in targets if t in edges} for m, targets in edges.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_no_module_under_dispatcher_is_part_of_an_import_cycle() -> None:
    assert cycles(graph(REPO / "dispatcher")) == []


def test_no_function_under_dispatcher_imports_a_dispatcher_module() -> None:
    late = [f"{imp.source}:{imp.line} imports {imp.target}" for imp in imports(REPO / "dispatcher") if imp.in_function]
    assert late == []


def test_the_walk_sees_every_kind_of_import_in_a_planted_package(tmp_path: Path) -> None:
    pkg = tmp_path / "dispatcher"
    (pkg / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "a.py": "from dispatcher import b\n",
        "b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from dispatcher.sub.c import X\n",
        "sub/__init__.py": "",
        "sub/c.py": "from .. import a\nX = 1\n",
        "late.py": "def f():\n    import dispatcher.a\n    return dispatcher.a\n",
    }
    for name, text in files.items():
        (pkg / name).write_text(text)
    assert cycles(graph(pkg)) == [["dispatcher.a", "dispatcher.b", "dispatcher.sub.c"]]
    assert [(i.source, i.target) for i in imports(pkg) if i.in_function] == [("dispatcher.late", "dispatcher.a")]
