"""Every `python -m ...` command the README shows runs as written.

Commands that would run for minutes on the embedded model are checked as far as they go without
a model: the main job with ``--print-config`` (flags and config validated, as a run would), the
other modules with ``--help``; cheap ones (reading a file, validating a taxonomy) run for real.
Placeholders (``my_data.jsonl``, ``data.jsonl``) become small files made here.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.shards import atomic_write_jsonl

REPO = Path(__file__).resolve().parents[1]
RUN_FOR_REAL = {"pipelines.io", "generators.taxonomy"}


def readme_commands() -> list[str]:
    """`python -m MODULE ...` lines (code blocks and inline code), continuation lines joined."""
    text = (REPO / "README.md").read_text(encoding="utf-8").replace("\\\n", " ")
    found = []
    for match in re.finditer(r"python -m ([\w.]+)([^`\n#|]*)", text):
        module, rest = match.group(1), match.group(2).strip().removesuffix("&").strip()  # `cmd &`: backgrounded
        if module == "pytest" or "<name>" in module or module.endswith("."):
            continue  # the test command itself; a pattern, not a command
        found.append(f"{module} {rest}".strip())
    return sorted(set(found))


def _argv(command: str, tmp: Path) -> list[str]:
    module, *args = shlex.split(command)
    args = [str(tmp / a) if a in ("my_data.jsonl", "data.jsonl", "rows.parquet", "rejects.jsonl") else a
            for a in args]
    if module == "flows.build_dataset" and "--help" not in args:
        return [module, *args, "--print-config"]
    if module in RUN_FOR_REAL:
        return [module, *args]
    return [module, "--help"]


def _readme_plugin_package(tmp: Path) -> None:
    """The README's own score and filter example, as the file it says to write (``# mypkg/x.py``)."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    for block in re.findall(r"```python\n(.*?)```", text, flags=re.S):
        first = block.splitlines()[0]
        if first.startswith("# mypkg/"):
            path = tmp / first[2:].strip()
            path.parent.mkdir(parents=True, exist_ok=True)
            (path.parent / "__init__.py").touch()
            path.write_text(block, encoding="utf-8")


def test_readme_lists_the_main_commands():
    modules = {c.split()[0] for c in readme_commands()}
    assert {"flows.build_dataset", "flows.stages", "pipelines.io", "benchmarks.selection"} <= modules


@pytest.mark.parametrize("command", readme_commands())
def test_readme_command_runs(command, tmp_path):
    rows = [{"instruction": "Say hi.", "input": "", "output": "Hi."}, {"instruction": "Add 2 and 2.", "output": "4"}]
    for name in ("my_data.jsonl", "data.jsonl"):
        atomic_write_jsonl(rows, tmp_path / name)
    _readme_plugin_package(tmp_path)
    argv = _argv(command, tmp_path)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    res = subprocess.run([sys.executable, "-m", *argv], cwd=REPO, capture_output=True, text=True, timeout=300,
                         env=env)
    assert res.returncode == 0, f"{' '.join(argv)}\n{res.stderr[-2000:]}"
