"""--estimate (issue 38): calls, tokens, seconds and cost per stage before anything runs; its
score tokens are within 10% of what a real tiny run read, its seconds come from the rates a run
leaves behind, and it writes no run folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_in_process

from flows.config import load_config
from flows.estimate import estimate, estimate_text, update_rates
from pipelines.shards import atomic_write_jsonl

REPO = Path(__file__).resolve().parents[1]


def _overrides(tmp: Path) -> list[str]:
    rows = [{"instruction": f"Question {i}: what does item {i} cost?",
             "input": f"Item {i} costs {i % 7 + 1} dollars." if i % 2 else "",
             "output": f"It costs {i % 7 + 1} dollars." + " Really." * (i % 4)} for i in range(24)]
    atomic_write_jsonl(rows, tmp / "in.jsonl")
    return ["generate.taxonomy.enabled=false", "generate.text.enabled=false", f"generate.inputs=[{tmp / 'in.jsonl'}]",
            "model.model=tiny", "model.backend=hf", "score.scores=[ifd, ctx_loss]", "run.shard_size=8",
            "select.steps=[{top_k: {column: score_ifd, fraction: 0.5}}]", f"run.out_dir={tmp / 'runs'}"]


def test_the_estimate_matches_a_real_runs_score_tokens_and_learns_its_speed(tmp_path, monkeypatch):
    monkeypatch.setenv("INSTRUCT_FORGE_CACHE", str(tmp_path / "cache"))
    cfg = load_config(overrides=_overrides(tmp_path))
    before = estimate(cfg)
    assert before["rows"] == 24 and before["stages"]["score"]["seconds"] is None  # no rate measured yet
    _, records = run_in_process(cfg)
    used = records["score"]["usage"]
    real_tokens = sum(u["prompt_tokens"] + u["completion_tokens"] for u in used.values())
    real_calls = sum(u["calls"] for u in used.values())
    est = before["stages"]["score"]
    assert abs(est["tokens"] - real_tokens) <= 0.1 * real_tokens, (est, real_tokens)
    assert est["calls"] == real_calls  # 24 rows, twice, and the 12 with a context once more

    update_rates(list(records.values()))
    priced = load_config(overrides=[*_overrides(tmp_path), "model.price_per_million={prompt: 2.0, completion: 6.0}"])
    after = estimate(priced)["stages"]["score"]
    assert after["seconds"] is not None  # from the rates the run left (the tiny model: a fraction of a second)
    assert after["cost"] == pytest.approx(after["tokens"] * 2.0 / 1e6, abs=1e-4)  # scores read: the prompt price
    assert "score" in estimate_text(estimate(priced))


def test_estimate_prints_and_exits_without_a_run_folder(tmp_path):
    env = {**os.environ, "INSTRUCT_FORGE_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(REPO)}
    args = [a for o in _overrides(tmp_path) for a in ("--set", o)]
    res = subprocess.run([sys.executable, "-m", "flows.build_dataset", *args, "--estimate"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "estimate: 24 rows to score" in res.stdout and "no rate" in res.stdout
    assert not (tmp_path / "runs").exists()
