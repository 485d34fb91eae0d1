"""The selectors/ folder must not shadow the standard library's `selectors` (asyncio needs it)."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_stdlib_selectors_not_shadowed_from_repo_root():
    code = "import asyncio, selectors; selectors.DefaultSelector; print(selectors.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert str(REPO / "selectors") not in out.stdout
    assert not (REPO / "selectors" / "__init__.py").exists()


def test_project_selectors_importable_under_their_own_name():
    code = "import instruct_selectors, os; print(list(instruct_selectors.__path__)[0])"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert Path(out.stdout.strip()).resolve() == (REPO / "selectors").resolve()
