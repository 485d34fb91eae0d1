"""Layout rules: the stdlib's `selectors` is not shadowed, layers only import downward, and no
module cycles.

Layers, bottom to top: pipelines/ (the core) -> generators/, selectors/ (built on the core) ->
flows/ (orchestration). benchmarks/ and tests/ may import anything.

Cycles: every import of a project module (module level and inside functions, relative ones too;
``if TYPE_CHECKING:`` blocks left out, they never run) is an edge from the importing module to the
imported one; any strongly connected set of two or more modules fails, listed with one cycle.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# folder -> top-level packages it must never import
FORBIDDEN = {
    "pipelines": {"flows", "generators", "instruct_selectors", "benchmarks"},
    "generators": {"flows", "benchmarks"},
    "selectors": {"flows", "generators", "benchmarks"},
}


def imported_packages(path: Path) -> set[tuple[str, int]]:
    """Top-level package names imported anywhere in the file (function-level imports too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {(a.name.split(".")[0], node.lineno) for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add((node.module.split(".")[0], node.lineno))
    return found


def upward_imports(folder: str) -> list[str]:
    bad = []
    for path in sorted((REPO / folder).rglob("*.py")):
        for package, line in sorted(imported_packages(path)):
            if package in FORBIDDEN[folder]:
                bad.append(f"{path.relative_to(REPO)}:{line} imports {package}")
    return bad


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_layers_import_downward_only(folder):
    assert upward_imports(folder) == []


def test_the_check_catches_an_upward_import(tmp_path):
    bad = tmp_path / "x.py"
    bad.write_text("def f():\n    from flows.stages import score\n")
    assert ("flows", 2) in imported_packages(bad)


def test_stdlib_selectors_not_shadowed_from_repo_root():
    code = "import asyncio, selectors; selectors.DefaultSelector; print(selectors.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert str(REPO / "selectors") not in out.stdout
    assert not (REPO / "selectors" / "__init__.py").exists()


def test_project_selectors_importable_under_their_own_name():
    code = "import instruct_selectors, os; print(list(instruct_selectors.__path__)[0])"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert Path(out.stdout.strip()).resolve() == (REPO / "selectors").resolve()


# --------------------------------------------------------------------------- import cycles
PACKAGES = {"pipelines": "pipelines", "generators": "generators", "selectors": "instruct_selectors",
            "flows": "flows", "benchmarks": "benchmarks"}  # folder -> the name it is imported by

# Cycles known and being removed on another branch: a cycle is let through only when all of its
# modules are in one of these sets. Nothing else may be added here.
ALLOWED_CYCLES: list[set[str]] = []  # none: keep it that way


def project_modules(root: Path = REPO) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the project's packages."""
    modules = {}
    for folder, name in PACKAGES.items():
        for path in sorted((root / folder).rglob("*.py")):
            parts = [name, *path.relative_to(root / folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _runtime_nodes(tree: ast.AST):
    """Every node, bar the bodies of ``if TYPE_CHECKING:`` blocks."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            test = child.test if isinstance(child, ast.If) else None
            if test is not None and "TYPE_CHECKING" in ast.unparse(test):
                todo.extend(child.orelse)
                continue
            todo.append(child)


def module_imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``name`` (in ``path``) imports: ``import a.b`` -> a.b (or its longest
    project prefix); ``from a import b`` -> a.b when that is a module, else a."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def known(dotted: str) -> str | None:
        while dotted and dotted not in modules:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    found = set()
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {known(a.name) for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for a in node.names:
                found.add(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else known(base))
    return found - {None, name}


def import_graph(root: Path = REPO) -> dict[str, set[str]]:
    modules = project_modules(root)
    return {name: module_imports(name, path, modules) for name, path in modules.items()}


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """The sets of two or more modules that all reach each other through imports (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    sets: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                sets.append(group)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sets


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a -> b -> ... -> a) per strongly connected set of modules."""
    return [_one_cycle(graph, group) for group in strongly_connected(graph)]


def _one_cycle(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    """A shortest path from the group's first module back to itself, inside the group."""
    start = min(group)
    paths = {start: [start]}
    todo = [start]
    while todo:
        v = todo.pop(0)
        for w in sorted(graph[v] & group):
            if w == start:
                return [*paths[v], start]
            if w not in paths:
                paths[w] = [*paths[v], w]
                todo.append(w)
    raise AssertionError(f"{sorted(group)} is not strongly connected")


def test_no_import_cycles_between_project_modules():
    graph = import_graph()
    bad = [group for group in strongly_connected(graph) if not any(group <= allowed for allowed in ALLOWED_CYCLES)]
    assert [f"{' -> '.join(_one_cycle(graph, g))} (all of: {', '.join(sorted(g))})" for g in bad] == []


def test_the_cycle_check_sees_function_level_and_relative_imports(tmp_path):
    pkg = tmp_path / "pipelines"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pipelines import b\n")
    (pkg / "b.py").write_text("def f():\n    from .c import g\n")
    (pkg / "c.py").write_text("import pipelines.a\n")
    (pkg / "d.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pipelines.a\n")
    (pkg / "e.py").write_text("import pipelines.d\n")
    graph = import_graph(tmp_path)
    assert graph["pipelines.d"] == set()
    assert import_cycles(graph) == [["pipelines.a", "pipelines.b", "pipelines.c", "pipelines.a"]]
