"""Stage functions without Prefect: each takes its inputs as arguments and writes via RunFolder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from instruct_selectors.policy_steps import parse_steps

from flows.config import load_config
from flows.pipeline import run_stage
from flows.run_folder import RunFolder
from flows.stages.score import score_shard
from pipelines.shards import atomic_write_jsonl, list_shards

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def run_and_cfg(tmp_path):
    rows = [{"instruction": f"What is {i} plus {i}?", "input": f"Numbers: {i}." if i % 2 else "",
             "output": f"It is {2 * i}."} for i in range(10)]
    data = tmp_path / "in.jsonl"
    atomic_write_jsonl(rows, data)
    cfg = load_config(overrides=[
        "generate.taxonomy.enabled=false", "generate.text.enabled=false", f"generate.inputs=[{data}]",
        "model.model=tiny", "model.backend=hf", "score.scores=[ifd, ctx_loss]", "run.shard_size=4",
        f"run.out_dir={tmp_path / 'runs'}", "select.steps=[{top_k: {column: score_ifd, fraction: 0.5}}]",
    ])
    run = RunFolder(cfg.run_dir())
    run.claim(cfg.fingerprint(), cfg.model_dump_json())
    return run, cfg


def test_stages_run_in_order_without_prefect(run_and_cfg):
    run, cfg = run_and_cfg
    collected = run_stage("collect", run, cfg)
    assert collected["rows_out"] == 10 and collected["shards"] == 3 == len(list_shards(run.examples))
    scored = run_stage("score", run, cfg)
    assert scored["rows_out"] == 10 and len(list_shards(run.scored)) == 3
    selected = run_stage("select", run, cfg)
    table = pl.read_parquet(run.selected)
    assert selected["rows_out"] == int(table["keep"].sum()) == 5
    # select writes its own ctx_dependent column and leaves meta (the reader's column) alone
    assert "ctx_dependent" in table.columns
    exported = run_stage("export", run, cfg)
    assert run.path(exported["outputs"]["parquet"]).is_dir() and exported["rows_out"] == 5
    assert run.load_record("export")["rows_out"] == 5
    report = run_stage("report", run, cfg)["outputs"]
    assert run.path(report["markdown"]).read_text().startswith("# Run report")


def test_score_shard_is_skipped_when_done(run_and_cfg):
    run, cfg = run_and_cfg
    run_stage("collect", run, cfg)
    score_shard(cfg, run, 0)
    first = list_shards(run.scored)[0].stat().st_mtime_ns
    assert score_shard(cfg, run, 0) == 4
    assert list_shards(run.scored)[0].stat().st_mtime_ns == first


def test_color_without_conditional_model_is_a_clear_error(run_and_cfg):
    run, cfg = run_and_cfg
    run_stage("collect", run, cfg)
    cfg = cfg.model_copy(update={"score": cfg.score.model_copy(update={"scores": ["color"]})})
    with pytest.raises(ValueError, match="condition stage"):
        score_shard(cfg, run, 0, conditioned=None)


def test_one_stage_reruns_from_the_command_line(run_and_cfg):
    run, cfg = run_and_cfg
    run_stage("collect", run, cfg)
    run_stage("score", run, cfg)
    res = subprocess.run([sys.executable, "-m", "flows.stages", "select", str(run.root)], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert run.selected.exists() and run.load_record("select")["rows_out"] == 5


def test_stage_command_on_a_folder_that_is_not_a_run(tmp_path):
    res = subprocess.run([sys.executable, "-m", "flows.stages", "select", str(tmp_path)], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 1
    assert "config.json not found" in res.stderr and "Traceback" not in res.stderr


def test_target_sim_runs_through_condition_and_score(run_and_cfg):
    run, cfg = run_and_cfg
    score = cfg.score.model_copy(update={"scores": ["ifd", "target_sim"]})
    steps = parse_steps([{"top_k": {"column": "score_target_sim", "fraction": 0.3}}])  # model_copy does not validate
    cfg = cfg.model_copy(update={"score": score, "select": cfg.select.model_copy(update={"steps": steps})})
    run_stage("collect", run, cfg)
    conditioned = run_stage("condition", run, cfg)
    assert run.path(conditioned["target_embedding"]).exists() and "conditional_model" not in conditioned
    run_stage("score", run, cfg)
    assert run_stage("select", run, cfg)["rows_out"] == 3
    table = pl.read_parquet(run.selected)
    assert table["score_target_sim"].null_count() == 0
    assert table["score_target_sim"].is_between(-1, 1).all()
    with pytest.raises(ValueError, match="condition stage"):
        score_shard(cfg, RunFolder(run.root / "other"), 0)
    # Embedding the target rows with their passages is another target vector, kept beside the first.
    with_context = cfg.model_copy(update={"score": score.model_copy(update={"target_context": True})})
    again = run_stage("condition", run, with_context)
    assert again["target_embedding"] != conditioned["target_embedding"]
    assert run.path(conditioned["target_embedding"]).exists()
