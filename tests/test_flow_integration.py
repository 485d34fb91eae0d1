"""The main job on the embedded SmolLM2 with a small budget: both generators, every default score."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.integration
@pytest.mark.timeout(2400)
def test_default_flow_small_budget_on_embedded_model(tmp_path):
    env = dict(os.environ, PREFECT_HOME=str(tmp_path / "prefect-home"), HF_HUB_OFFLINE="1",
               PREFECT_LOGGING_LEVEL="WARNING")
    args = ["--out-dir", str(tmp_path / "runs"), "--run-name", "small", "--backend", "hf",
            "--set", "generate.taxonomy.max_disciplines=1", "--set", "generate.taxonomy.subjects_per_discipline=2",
            "--set", "generate.text.max_passages=3"]  # sampled answers: too small a budget can yield no row
    res = subprocess.run([sys.executable, "-m", "flows.build_dataset", *args], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, res.stderr[-4000:]
    run_dir = tmp_path / "runs" / "small"
    collect = json.loads((run_dir / "stages" / "collect.json").read_text())
    assert collect["rows_out"] > 0
    selected = pl.read_parquet(run_dir / "selected" / "all.parquet")
    for col in ("score_target_sim", "score_ifd", "score_ctx_loss"):
        assert col in selected.columns
    assert selected["score_ifd"].drop_nulls().len() == selected.height
    assert (run_dir / "dataset" / "README.md").exists()
    assert "dataset (jsonl)" in res.stdout
