"""The run folder after real runs of the flow on the tiny model (issue 23): Prefect's task results are
JSON and a resume never unpickles anything found there; stage records name files relative to the
folder while the end-of-run lines still print paths that open; a failure's traceback is in run.log."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.shards import atomic_write_jsonl

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")  # pickle protocols 2-5 (cloudpickle too)


def _args(tmp: Path, name: str) -> list[str]:
    data = tmp / "input.jsonl"
    if not data.exists():
        atomic_write_jsonl([{"instruction": f"Question {i}: what does item {i} cost?", "input": "",
                             "output": f"It costs {i % 7 + 1} dollars."} for i in range(12)], data)
    return ["--no-taxonomy", "--no-text", "--model", "tiny", "--backend", "hf", "--input", str(data),
            "--out-dir", str(tmp / "runs"), "--scores", "ifd", "--run-name", name, "--set", "run.shard_size=6",
            "--set", "select.steps=[{top_k: {column: score_ifd, fraction: 0.5}}]"]


def _run(args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PREFECT_HOME": str(tmp / "prefect-home"), "HF_HUB_OFFLINE": "1",
           "PYTHONUNBUFFERED": "1", "PREFECT_LOGGING_LEVEL": "WARNING"}
    return subprocess.run([sys.executable, "-m", "flows.build_dataset", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


class _Evil:
    """Unpickling this creates a file: proof that something was unpickled."""

    def __init__(self, proof: Path):
        self.proof = str(proof)

    def __reduce__(self):
        return (open, (self.proof, "w"))


def test_records_are_json_and_relative_and_a_resume_unpickles_nothing(tmp_path):
    res = _run(_args(tmp_path, "r"), tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    run_dir = tmp_path / "runs" / "r"
    assert not (run_dir / ".prefect-results").exists(), "Prefect keeps no results in the run folder"
    for p in run_dir.rglob("*"):
        if p.is_file():
            assert not p.read_bytes().startswith(PICKLE_MAGIC), f"{p} is a pickle"
    # Stage records (and the results) name files relative to the run folder...
    for p in (run_dir / "stages").glob("*.json"):
        assert str(run_dir) not in p.read_text(), p
    export = json.loads((run_dir / "stages" / "export.json").read_text())
    assert export["outputs"]["parquet"] == "dataset/parquet"
    # ...and the end-of-run lines still print paths that open.
    printed = [line.split(": ", 1)[1] for line in res.stdout.splitlines() if line.startswith(("dataset (", "report ("))]
    assert printed and all(Path(p).is_absolute() and Path(p).exists() for p in printed)

    # Someone plants pickles where Prefect would keep results: a resume never reads them.
    proof = tmp_path / "unpickled"
    evil = base64.b64encode(__import__("pickle").dumps(_Evil(proof))).decode()
    planted = run_dir / ".prefect-results"
    planted.mkdir()
    (planted / "collect").write_text(json.dumps({"metadata": {"serializer": {"type": "pickle"}}, "result": evil}))
    again = _run(_args(tmp_path, "r"), tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert not proof.exists(), "a file in the run folder was unpickled"
    assert "rows kept: 6" in again.stdout


def test_a_failure_in_the_flow_leaves_its_traceback_in_run_log_and_one_line_on_the_console(tmp_path):
    run_dir = tmp_path / "runs" / "taken"
    run_dir.mkdir(parents=True)
    (run_dir / ".config-fingerprint").write_text("another-config")  # claim() raises inside the flow
    res = _run(_args(tmp_path, "taken"), tmp_path)
    assert res.returncode == 1
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout
    assert "error: run folder" in res.stderr and "different configuration" in res.stderr
    log = (run_dir / "run.log").read_text()
    assert "ERROR flows.build_dataset: build_dataset failed\nTraceback (most recent call last):" in log
    assert "RunFolderConflict" in log.split("build_dataset failed", 1)[1]


def test_a_foreign_folder_is_refused_before_anything_is_written_in_it(tmp_path):
    theirs = tmp_path / "runs" / "photos"
    theirs.mkdir(parents=True)
    (theirs / "part-00000.parquet").write_bytes(b"someone's file")
    res = _run(_args(tmp_path, "photos"), tmp_path)
    assert res.returncode == 1 and "not a run folder of this project" in res.stderr
    assert [p.name for p in theirs.iterdir()] == ["part-00000.parquet"]
