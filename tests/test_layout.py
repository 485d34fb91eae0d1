"""Layout rules: the stdlib's `selectors` is not shadowed, and layers only import downward.

Layers, bottom to top: pipelines/ (the core) -> generators/, selectors/ (built on the core) ->
flows/ (orchestration). benchmarks/ and tests/ may import anything.
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
