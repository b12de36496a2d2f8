"""The package's shape, read from its source with ``ast`` (nothing is imported): no import cycle between inspectkit's
modules, imports inside functions and relative imports included; no module over 400 lines unless its docstring
says why (the docstring mentions "400 lines"); and ARCHITECTURE.md's table names every module, and only those."""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from pathlib import Path

import pytest

PACKAGE = "inspectkit"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE
MAX_LINES = 400
LONG_MODULE_MARKER = "400 lines"  # a module docstring that says why the module is longer names the limit it passes


def module_files(root: Path = ROOT, package: str = PACKAGE) -> dict[str, Path]:
    """Every module of the package by dotted name; a package by its own name (its ``__init__.py``)."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _imported(module: str, is_package: bool, tree: ast.AST, known: set[str]) -> set[str]:
    """The package's modules that running ``module`` imports: every ``import`` and ``from ... import`` anywhere in it
    (inside functions too), relative ones resolved, ``from pkg import sub`` to the submodule ``sub``, and the
    packages whose ``__init__`` an import runs on the way (except the module's own ancestors: already running)."""
    own_package = module if is_package else module.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = own_package.split(".")
                base_parts = base_parts[:len(base_parts) - (node.level - 1)]
                base = ".".join([*base_parts, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            targets.add(base)
            targets.update(f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in known)
    edges = set()
    for target in targets:
        while target and target not in known:  # ``import inspectkit.x.attr`` or a name that is not a module
            target = target.rpartition(".")[0]
        if not target:
            continue
        for name in [*_ancestors(target), target]:
            if name in known and name != module and name not in _ancestors(module):
                edges.add(name)
    return edges


def import_graph(root: Path = ROOT, package: str = PACKAGE) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (see ``_imported``)."""
    files = module_files(root, package)
    known = set(files)
    return {name: _imported(name, path.name == "__init__.py", ast.parse(path.read_text(encoding="utf-8")), known)
            for name, path in files.items()}


def find_cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of two or more modules (or a module importing itself), each as one cycle
    through it, e.g. ``["a", "b", "a"]``: Tarjan's algorithm, then a path back to the start inside the group."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

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
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1 or node in graph.get(node, ()):
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_cycle_in(group, graph) for group in groups]


def _cycle_in(group: set[str], graph: Mapping[str, set[str]]) -> list[str]:
    """A shortest path from the group's first module back to itself, through the group (breadth-first)."""
    start = min(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph.get(node, set()) & group):
                if nxt == start:
                    return [*paths[node], start]
                if nxt not in paths:
                    paths[nxt] = [*paths[node], nxt]
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"{sorted(group)} is strongly connected, so it holds a cycle")


def test_the_cycle_finder_finds_the_old_training_evaluation_cycle():
    """The shape inspectkit had before the split: evaluation imported training at the top, training imported
    evaluation back inside a function."""
    graph = {"evaluation": {"training", "data"}, "training": {"data", "evaluation"}, "data": set(),
             "report": {"evaluation"}}
    assert find_cycles(graph) == [["evaluation", "training", "evaluation"]]
    graph["training"].discard("evaluation")
    assert find_cycles(graph) == []
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"d"}}) == [["a", "b", "c", "a"], ["d", "d"]]


def test_function_level_relative_and_package_imports_are_edges(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from .deep import thing\n")
    (package / "sub" / "deep.py").write_text("from .. import top\nthing = 1\n")
    (package / "top.py").write_text("def late():\n    from .sub.deep import thing\n    return thing\n")
    (package / "plain.py").write_text("import pkg.top\nfrom pkg import sub\n")
    graph = import_graph(package, "pkg")
    assert graph["pkg.top"] == {"pkg.sub", "pkg.sub.deep"}  # inside a function; the package __init__ runs too
    assert graph["pkg.sub"] == {"pkg.sub.deep"}
    assert graph["pkg.sub.deep"] == {"pkg.top"}  # ``from .. import top``: the submodule, not the package
    assert graph["pkg.plain"] == {"pkg.top", "pkg.sub"}
    assert find_cycles(graph) == [["pkg.sub", "pkg.sub.deep", "pkg.top", "pkg.sub"]]


def test_inspectkit_has_no_import_cycle():
    graph = import_graph()
    assert {"inspectkit.training", "inspectkit.evaluation", "inspectkit.anomaly.patchcore"} <= set(graph)
    assert "inspectkit.checkpoints" in graph["inspectkit.evaluation"]  # the walk sees the real imports
    cycles = find_cycles(graph)
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def _docstring(path: Path) -> str:
    return ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""


@pytest.mark.parametrize("name", sorted(module_files()))
def test_every_module_has_a_docstring_and_is_short_or_says_why(name):
    path = module_files()[name]
    lines = len(path.read_text(encoding="utf-8").splitlines())
    docstring = _docstring(path)
    assert docstring, f"{path.relative_to(ROOT.parent)} has no module docstring saying what it owns"
    assert lines <= MAX_LINES or LONG_MODULE_MARKER in docstring, (
        f"{path.relative_to(ROOT.parent)} has {lines} lines (> {MAX_LINES}); split it by concern, or say in its "
        f"docstring why it is one module (mention \"{LONG_MODULE_MARKER}\")")


def modules_in_map(text: str) -> set[str]:
    """The module files ARCHITECTURE.md's table rows name, relative to the package: each row's first cell, where a
    bare ``x.py`` after ``dir/y.py`` is ``dir/x.py``."""
    named = set()
    for line in text.splitlines():
        if not line.startswith("| `"):
            continue
        folder = ""
        for token in re.findall(r"`([^`]+\.py)`", line.split("|")[1]):
            if "/" in token:
                folder = token.rpartition("/")[0] + "/"
                named.add(token.removeprefix(f"{PACKAGE}/"))
            else:
                named.add(folder + token)
    return named


def test_the_map_cell_parser_reads_folders_and_bare_names():
    table = "| `export/yolo.py`, `coco.py` | writers |\n| `cli.py` | flags `x.py` |\nnot a row `a.py`"
    assert modules_in_map(table) == {"export/yolo.py", "export/coco.py", "cli.py"}


def test_the_architecture_map_names_every_module():
    on_disk = {path.relative_to(ROOT).as_posix() for path in module_files().values()}
    in_map = modules_in_map((ROOT.parent / "ARCHITECTURE.md").read_text(encoding="utf-8"))
    assert sorted(on_disk - in_map) == [], "modules missing from ARCHITECTURE.md"
    assert sorted(in_map - on_disk) == [], "ARCHITECTURE.md names modules that do not exist"
