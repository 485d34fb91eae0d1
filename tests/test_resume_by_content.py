"""Resume is keyed by content: an unchanged rerun touches nothing, a corrected row reaches the
export and rescores only its shard, a changed target rebuilds what depends on it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from pipelines.shards import atomic_write_jsonl

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _rows(n: int, fix: dict[int, str] | None = None) -> list[dict]:
    fix = fix or {}
    return [{"instruction": f"Question {i}: what does item {i} cost?", "input": "",
             "output": fix.get(i, f"It costs {i % 7 + 1} dollars.")} for i in range(n)]


def _flow(tmp: Path, data: Path, target: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PREFECT_HOME=str(tmp / "prefect"), HF_HUB_OFFLINE="1", PREFECT_LOGGING_LEVEL="WARNING")
    args = ["--no-taxonomy", "--no-text", "--model", "tiny", "--backend", "hf", "--input", str(data),
            "--out-dir", str(tmp / "runs"), "--run-name", "nightly", "--scores", "ifd,target_sim",
            "--set", f"score.target={target}", "--set", "run.shard_size=4",
            "--set", "select.steps=[{top_k: {column: score_target_sim, fraction: 0.5}}]"]
    res = subprocess.run([sys.executable, "-m", "flows.build_dataset", *args], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def _stamps(root: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime) of every file of the run folder but the log and the lock."""
    return {str(p.relative_to(root)): (p.stat().st_ino, p.stat().st_mtime_ns) for p in root.rglob("*")
            if p.is_file() and p.name not in ("run.log", ".lock")}


def test_reruns_redo_exactly_what_changed(tmp_path):
    data, target = tmp_path / "pool.jsonl", tmp_path / "target.jsonl"
    atomic_write_jsonl(_rows(12), data)
    atomic_write_jsonl([{"instruction": "What does item 40 cost?", "output": "It costs 3 dollars."},
                        {"instruction": "What does item 41 cost?", "output": "It costs 5 dollars."}], target)
    run = tmp_path / "runs" / "nightly"
    _flow(tmp_path, data, target)
    first = _stamps(run)

    _flow(tmp_path, data, target)  # nothing changed: nothing is rewritten
    assert _stamps(run) == first

    atomic_write_jsonl(_rows(12, fix={5: "It costs exactly 99 dollars."}), data)  # one corrected row
    _flow(tmp_path, data, target)
    after_fix = _stamps(run)
    changed = {k for k in first if after_fix.get(k) != first[k]}
    assert "examples/part-00001.parquet" in changed and "scored/part-00001.parquet" in changed
    for untouched in ("examples/part-00000.parquet", "examples/part-00002.parquet",
                      "scored/part-00000.parquet", "scored/part-00002.parquet"):
        assert untouched not in changed, untouched  # only the corrected row's shard is rescored
    assert not any(k.startswith("conditional/") for k in changed)  # the target did not change
    exported = pl.read_parquet(run / "dataset" / "parquet")
    everything = pl.read_parquet(run / "selected" / "all.parquet")
    assert "It costs exactly 99 dollars." in everything["response"].to_list()
    assert "It costs 6 dollars." not in everything.filter(pl.col("instruction").str.contains("item 5:"))["response"]
    assert exported.height == everything["keep"].sum()

    atomic_write_jsonl([{"instruction": "What does item 40 cost?", "output": "It costs 3 dollars."},
                        {"instruction": "Name item 42.", "output": "Item 42 is a lamp."}], target)
    _flow(tmp_path, data, target)  # a changed target: condition rebuilds, the examples stay
    after_target = _stamps(run)
    changed = {k for k in after_fix if after_target.get(k) != after_fix[k]}
    assert not any(k.startswith("examples/") for k in changed)
    assert any(k.startswith("conditional/target-embedding") for k in set(after_target) - set(after_fix))
    assert {"scored/part-00000.parquet", "scored/part-00001.parquet", "scored/part-00002.parquet"} <= changed
    record = json.loads((run / "stages" / "collect.json").read_text())
    assert record["input_key"] and (run / "stages" / "collect.json").stat().st_mtime_ns == after_fix["stages/collect.json"][1]
