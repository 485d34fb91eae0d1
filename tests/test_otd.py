"""GOT-D (score_otd): ranks toward the target on toy embeddings, runs in score_table and the stages."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from instruct_selectors.score import score_table
from instruct_selectors.scores.otd import cost_scale, dual_potentials, otd_score
from instruct_selectors.target_sim import target_rows

from flows.config import load_config
from flows.pipeline import run_stage
from flows.run_folder import RunFolder
from flows.stages.condition import targets_needed
from flows.stages.score import score_shard
from pipelines.schema import make_example, to_table
from pipelines.shards import atomic_write_jsonl


def _toy(seed: int = 0):
    """2-D candidates in three clusters; the target is the third, small cluster shifted a little."""
    rng = np.random.default_rng(seed)
    far_a = rng.normal([1.0, 0.0], 0.05, (40, 2))
    far_b = rng.normal([0.0, 1.0], 0.05, (40, 2))
    near = rng.normal([0.6, 0.8], 0.03, (12, 2))
    cand = np.concatenate([far_a, far_b, near])
    target = rng.normal([0.65, 0.76], 0.03, (30, 2))
    order = rng.permutation(len(cand))  # near rows anywhere, not last
    return cand[order], target, np.flatnonzero(order >= 80)


def _angle_to_target(cand, target):
    mean = target.mean(axis=0)
    unit = cand / np.linalg.norm(cand, axis=1, keepdims=True)
    return np.arccos(np.clip(unit @ (mean / np.linalg.norm(mean)), -1, 1))


@pytest.mark.parametrize("batch_size", [1024, 32])
def test_top_ranked_are_the_candidates_nearest_the_target(batch_size):
    cand, target, near = _toy()
    s = otd_score(cand, target, batch_size=batch_size)
    assert np.isfinite(s).all()
    top = np.argsort(-s)[: len(near)]
    assert set(top) == set(near)
    # the whole ranking follows the distance to the target cluster, far clusters last
    angle = _angle_to_target(cand, target)
    assert np.corrcoef(s, angle)[0, 1] < -0.9
    assert s[near].min() > np.delete(s, near).max()


def test_crowded_region_scores_lower_than_an_uncovered_one():
    """GOT-D's distribution matching, unlike a plain distance: of two target modes, the one the
    pool already floods is worth less per row than the one only a few candidates cover."""
    rng = np.random.default_rng(1)
    t_a, t_b = rng.normal([1.0, 0.1], 0.02, (20, 2)), rng.normal([0.1, 1.0], 0.02, (20, 2))
    crowd = rng.normal([1.0, 0.1], 0.02, (60, 2))
    few = rng.normal([0.1, 1.0], 0.02, (4, 2))
    s = otd_score(np.concatenate([crowd, few]), np.concatenate([t_a, t_b]))
    # equally close to a target mode, yet the rows of the uncovered mode rank first
    assert s[60:].min() > s[:60].max()


def test_potentials_are_a_gradient_with_the_target_side_gauge():
    rng = np.random.default_rng(2)
    cost = rng.uniform(0, 1, (7, 5))
    f, g = dual_potentials(cost, 0.2)
    assert g.mean() == pytest.approx(0, abs=1e-12)
    # the plan a_i b_j exp((f_i + g_j - C_ij) / eps) has the uniform marginals
    plan = np.exp((f[:, None] + g[None, :] - cost) / 0.2) / (7 * 5)
    assert plan.sum(axis=1) == pytest.approx(np.full(7, 1 / 7), abs=1e-6)
    assert plan.sum(axis=0) == pytest.approx(np.full(5, 1 / 5), abs=1e-6)


def test_input_errors_and_non_finite_rows():
    cand, target, _ = _toy()
    cand[3] = np.nan
    s = otd_score(cand, target)
    assert np.isnan(s[3]) and np.isfinite(np.delete(s, 3)).all()
    with pytest.raises(ValueError, match="same width"):
        otd_score(cand, np.ones((4, 3)))
    with pytest.raises(ValueError, match="at least one target row"):
        otd_score(cand, np.zeros((0, 2)))
    assert cost_scale(target[:1]) == 1.0 and 0 < cost_scale(target) < 0.1


def test_score_table_writes_a_finite_otd_column(tiny):
    llm = tiny.hf()
    rows = [make_example(f"Question {i}: what is {i} times two?", f"It is {2 * i}.") for i in range(6)]
    rows += [make_example("Write a poem about the sea.", "Waves roll in and out again.", context="Poems.")]
    table = to_table(rows)
    matrix = target_rows(llm, table[:3])
    assert matrix.shape[0] == 3 and matrix.dtype == np.float32
    scored = score_table(table, llm, scores=("otd", "target_sim"), target_matrix=matrix,
                         target_vector=matrix.mean(axis=0))
    col = scored["score_otd"]
    assert col.null_count() == 0 and np.isfinite(col.to_numpy()).all()
    assert col.n_unique() > 1
    with pytest.raises(ValueError, match="target_matrix"):
        score_table(table, llm, scores=("otd",))


@pytest.fixture()
def run_and_cfg(tmp_path):
    rows = [{"instruction": f"What is {i} plus {i}?", "input": "", "output": f"It is {2 * i}."} for i in range(10)]
    data = tmp_path / "in.jsonl"
    atomic_write_jsonl(rows, data)
    target = tmp_path / "target.jsonl"
    atomic_write_jsonl(rows[:3], target)
    cfg = load_config(overrides=[
        "generate.taxonomy.enabled=false", "generate.text.enabled=false", f"generate.inputs=[{data}]",
        "model.model=tiny", "model.backend=hf", "score.scores=[otd, ifd]", f"score.target={target}",
        "run.shard_size=4", f"run.out_dir={tmp_path / 'runs'}",
        "select.steps=[{top_k: {column: score_otd, fraction: 0.3}}]",
    ])
    run = RunFolder(cfg.run_dir())
    run.claim(cfg.fingerprint(), cfg.model_dump_json())
    return run, cfg


def test_flow_config_with_otd_validates_and_runs_through_the_stages(run_and_cfg):
    run, cfg = run_and_cfg
    assert targets_needed(cfg) == {"target_matrix"} and [s.spec() for s in cfg.select.steps] == [{"top_k": {"column": "score_otd", "fraction": 0.3}}]
    # a top_k on score_otd without the score is refused
    with pytest.raises(ValueError, match="score_otd"):
        load_config(overrides=["score.scores=[ifd]", "select.steps=[{top_k: {column: score_otd, fraction: 0.3}}]"])
    run_stage("collect", run, cfg)
    with pytest.raises(ValueError, match="condition stage"):
        score_shard(cfg, run, 0)
    conditioned = run_stage("condition", run, cfg)
    path = run.path(conditioned["target_matrix"])  # records name files relative to the run folder
    assert path.parent == run.conditional and "target_embedding" not in conditioned
    assert np.load(path).shape[0] == 2  # 3 target rows, 1 held out for train (score.target_holdout)
    mtime = path.stat().st_mtime_ns
    assert run.path(run_stage("condition", run, cfg)["target_matrix"]) == path and path.stat().st_mtime_ns == mtime  # cached
    run_stage("score", run, cfg)
    assert run_stage("select", run, cfg)["rows_out"] == 3
    table = pl.read_parquet(run.selected)
    assert table["score_otd"].null_count() == 0
    kept = table.filter(pl.col("keep"))["score_otd"]
    assert kept.min() >= table.filter(~pl.col("keep"))["score_otd"].max()
