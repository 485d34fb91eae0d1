"""The target-similarity variants of benchmarks.selection (selectors/target_sim_variants.py) and the
benchmark's pure helpers (leave-one-type-out split, standard-error report), on toy arrays."""

import numpy as np
import polars as pl
import pytest
from instruct_selectors.steps.top_k import ranks, reciprocal_rank_fusion
from instruct_selectors.target_sim_variants import (
    apply_whitening,
    density_penalised,
    fit_whitening,
    knn_density,
    length_matched_top,
    length_penalised,
    position_weights,
    rademacher_projection,
    target_sim_in,
    weighted_mean_pool,
)

from benchmarks.selection_data import MIN_TARGET, split
from benchmarks.selection_report import auto_check, random_stats, variant_summary
from pipelines.schema import make_example, meta_field, to_table


def test_position_weights_grow_linearly_and_sum_to_one():
    w = position_weights(4)
    assert np.allclose(w, [0.1, 0.2, 0.3, 0.4])
    assert position_weights(1).tolist() == [1.0]
    with pytest.raises(ValueError):
        position_weights(0)


def test_weighted_mean_pool_ignores_padding_and_weights_late_tokens_more():
    hidden = np.zeros((2, 3, 2))
    hidden[0] = [[1, 0], [0, 1], [9, 9]]  # row 0 has 2 tokens, the third is padding
    hidden[1] = [[3, 0], [0, 0], [0, 3]]
    out = weighted_mean_pool(hidden, [2, 3])
    assert np.allclose(out[0], [1 / 3, 2 / 3])  # weights 1/3, 2/3: the later token counts twice
    assert np.allclose(out[1], [3 / 6, 3 * 3 / 6])
    layered = weighted_mean_pool(np.stack([hidden, 2 * hidden], axis=1), [2, 3])  # (batch, layers, seq, dim)
    assert np.allclose(layered[:, 1], 2 * out) and np.allclose(layered[:, 0], out)
    with pytest.raises(ValueError):
        weighted_mean_pool(hidden, [4, 1])


def test_length_penalty_lets_a_long_target_prefer_long_rows_over_slightly_closer_short_ones():
    sim = np.array([0.95, 0.94, 0.90, 0.50])
    row_len = np.array([2, 60, 50, 60])
    target_len = [40, 50, 60]
    scored = length_penalised(sim, row_len, target_len, strength=0.5)
    assert np.argmax(scored) == 1 and scored[0] < scored[2]  # the 2-token row drops below a long one
    assert np.allclose(length_penalised(sim, row_len, target_len, strength=0.0), (sim - sim.mean()) / sim.std())


def test_length_matched_top_follows_the_target_length_mix():
    rng = np.random.default_rng(0)
    row_len = np.array([1] * 50 + [100] * 50)
    sim = np.concatenate([rng.uniform(0.8, 1.0, 50), rng.uniform(0.0, 0.5, 50)])  # short rows look closest
    target_len = [1] * 5 + [100] * 15  # but the target is mostly long
    out = length_matched_top(sim, row_len, target_len, k=20, bins=2)
    top = np.argsort(-out)[:20]
    assert (row_len[top] == 100).sum() == 15 and (row_len[top] == 1).sum() == 5
    assert np.allclose(out[out < 2], sim[out < 2])  # unpicked rows keep their similarity
    # a bin with too few rows hands its quota to the most similar rows left
    out = length_matched_top(sim[:52], row_len[:52], target_len, k=20, bins=2)
    assert (out > 2).sum() == 20 and (row_len[:52][out > 2] == 100).sum() == 2
    assert np.isnan(length_matched_top([np.nan, 0.5], [1, 1], [1], k=1))[0]


def test_whitening_gives_the_pool_identity_covariance_and_keeps_zca_cosines():
    rng = np.random.default_rng(1)
    pool = rng.normal(size=(200, 5)) @ rng.normal(size=(5, 5)) + 10.0  # anisotropic, far from 0
    mean, w = fit_whitening(pool)
    white = apply_whitening(pool, mean, w)
    assert np.allclose(np.cov(white, rowvar=False), np.eye(5), atol=1e-8)
    # ZCA = PCA whitening rotated back: same cosines
    cov = np.cov(pool, rowvar=False)
    vals, vecs = np.linalg.eigh(cov)
    zca = (pool - mean) @ vecs @ np.diag(vals**-0.5) @ vecs.T
    assert np.allclose(target_sim_in(white, white[:10]), target_sim_in(zca, zca[:10]))
    assert apply_whitening(pool, *fit_whitening(pool, dim=2)).shape == (200, 2)


def test_rademacher_projection_is_signed_and_keeps_inner_products_roughly():
    p = rademacher_projection(64, 4096, seed=3)
    assert set(np.unique(p * np.sqrt(4096)).tolist()) == {-1.0, 1.0}
    x = np.random.default_rng(2).normal(size=(2, 64))
    assert abs((x[0] @ p) @ (x[1] @ p) - x[0] @ x[1]) < 0.15 * np.linalg.norm(x[0]) * np.linalg.norm(x[1])
    assert np.array_equal(p, rademacher_projection(64, 4096, seed=3))


def test_ranks_and_reciprocal_rank_fusion():
    assert ranks([0.1, 0.9, np.nan, 0.5]).tolist() == [3, 1, 4, 2]
    a, b = np.array([3.0, 2.0, 1.0]), np.array([1.0, 3.0, 2.0])
    fused = reciprocal_rank_fusion(a, b, k=0)
    assert np.allclose(fused, [1 + 1 / 3, 1 / 2 + 1, 1 / 3 + 1 / 2])
    assert np.argmax(fused) == 1  # second in one list, first in the other beats first-and-last
    with pytest.raises(ValueError):
        reciprocal_rank_fusion()


def test_knn_density_marks_the_crowded_rows_and_the_penalty_prefers_the_lone_near_one():
    emb = np.array([[1, 0.01], [1, 0.02], [1, 0.03], [0.7, 0.7]])
    dens = knn_density(emb, k=2)
    assert dens[:3].min() > dens[3]
    sim = np.array([0.9, 0.9, 0.9, 0.85])
    assert np.argmax(density_penalised(sim, dens, strength=2.0)) == 3
    assert np.argmax(density_penalised(sim, dens, strength=0.0)) == 0


def _t0_table(types: dict[str, int]) -> pl.DataFrame:
    rows = [make_example(f"{t} question {i}", f"answer {i}", meta={"task_type": t})
            for t, n in types.items() for i in range(n)]
    return to_table(rows)


def test_leave_one_type_out_removes_every_row_of_the_type_from_the_pool():
    t0 = _t0_table({"summarization": 30, "sentiment": 40, "topic": 40})
    target, held, pool = split(t0, "loto:summarization", n_target=10, n_eval=15, n_pool=1000, seed=0)
    kinds = lambda t: set(meta_field(t, "task_type").to_list())  # noqa: E731
    assert kinds(target) == kinds(held) == {"summarization"} and "summarization" not in kinds(pool)
    assert pool.height == 80 and not set(held["id"]) & set(target["id"])
    # too few rows for both: the target keeps MIN_TARGET rows, the held-out set gets the rest
    target, held, _ = split(t0, "loto:summarization", n_target=100, n_eval=15, n_pool=10, seed=0)
    assert (target.height, held.height) == (MIN_TARGET, 30 - MIN_TARGET)
    # the in-pool form keeps the type's other rows in the pool
    _, held, pool = split(t0, "summarization", n_target=10, n_eval=15, n_pool=1000, seed=0)
    assert "summarization" in kinds(pool) and not set(held["id"]) & set(pool["id"])


def test_random_stats_and_variant_summary_count_standard_errors():
    mean, se = random_stats([2.0, 2.2, 2.4, 2.6, 2.8])
    assert np.isclose(mean, 2.4) and np.isclose(se, np.std([2.0, 2.2, 2.4, 2.6, 2.8], ddof=1) / np.sqrt(5))
    res = pl.DataFrame({
        "target": ["a"] * 4 + ["b"] * 4,
        "arm": ["random10_s0", "random10_s1", "default", "v", "random10_s0", "random10_s1", "default", "v"],
        "eval_loss": [2.0, 2.2, 1.5, 2.3, 3.0, 3.2, 3.1, 2.0],
    })
    lines = variant_summary(res, "random10")
    # se = 0.1 on both; default: -6 SE on a, 0 on b; v: +2 SE on a (worse by > 1), -11 SE on b
    assert lines["default"] == {"beats_2se": 1, "worse_1se": 0, "targets": 2, "max_ratio": pytest.approx(3.1 / 3.1)}
    assert lines["v"]["beats_2se"] == 1 and lines["v"]["worse_1se"] == 1


def test_auto_check_applies_the_choose_rule_on_the_grading_rows_and_scores_it_on_the_rest(capsys):
    res = pl.DataFrame({
        "target": ["a"] * 5 + ["b"] * 5,
        "arm": ["random10_s0", "random10_s1", "default", "v", "base"] * 2,
        # a: v wins the grading rows by 0.5 > spread 0.2 and is best on the rest too;
        # b: v wins the grading rows by 0.05 < spread 0.2, default is kept, but v was better on the rest
        "choose_loss": [2.0, 2.2, 1.9, 1.4, 3.0, 2.0, 2.2, 1.9, 1.85, 3.0],
        "eval_loss": [2.0, 2.2, 1.9, 1.5, 3.0, 2.0, 2.2, 1.9, 1.5, 3.0],
    })
    assert auto_check(res, "random10") == 1
    out = capsys.readouterr().out
    assert "auto a: kept v" in out and "agrees" in out
    assert "auto b: kept default" in out and "disagrees" in out


def test_a_resumed_benchmark_keeps_only_results_of_the_same_settings(tmp_path):
    import argparse
    import json

    from benchmarks.selection import kept_results, run_settings

    def args(**kw):
        base = dict(targets="a,b", json=str(tmp_path / "r.json"), resume=True, reuse_scores=False, cache_dir="x",
                    steps=16, seeds=2, fraction=0.1, big_fraction=0.3, whole_pool=True, arms=None, seed=0,
                    pool_rows=400)
        return argparse.Namespace(**(base | kw))

    settings = run_settings(args())
    assert settings == run_settings(args(targets="c", cache_dir="y", resume=False))  # where, not what
    assert settings != run_settings(args(steps=32)) and settings != run_settings(args(fraction=0.2))
    assert {"default", "longest", "ifd", "random10_s1"} <= set(settings["arm_steps"])  # the simple baselines too
    assert settings["arm_steps"]["ifd"][-1] == {"top_k": {"column": "score_ifd", "k": 40}}  # as many rows as 10%
    path = tmp_path / "r.json"
    assert kept_results(path, settings) == []
    rows = [{"target": "a", "arm": "base", "eval_loss": 2.0, "target_s": 5.0}]
    path.write_text(json.dumps({"settings": settings, "results": rows}))
    assert kept_results(path, settings) == rows
    with pytest.raises(SystemExit, match="other settings"):
        kept_results(path, run_settings(args(steps=32)))
    # a file from before --train-dtype was measured in float32: it resumes only in float32
    legacy = {k: v for k, v in run_settings(args(train_dtype="float32")).items() if k != "train_dtype"}
    path.write_text(json.dumps({"settings": legacy, "results": rows}))
    assert kept_results(path, run_settings(args(train_dtype="float32"))) == rows
    with pytest.raises(SystemExit, match="other settings"):
        kept_results(path, run_settings(args(train_dtype="bfloat16")))


def test_the_report_works_when_only_some_arms_are_named(capsys):
    """--arms without a random arm (issue 34): the report prints NaN distances, no TypeError."""
    from benchmarks.selection_report import print_report

    res = pl.DataFrame({"target": ["t1", "t1", "t2", "t2"], "arm": ["base", "default", "base", "default"],
                        "eval_loss": [3.0, 2.5, 4.0, 3.5]})
    print_report(res, 0.1, 0.3, wall_s=1.0)
    out = capsys.readouterr().out
    assert "default=2.5000 (+nan SE)" in out and out.strip().splitlines()[-1].startswith("default_vs_random10=nan")


def test_the_verdict_lines_come_from_the_confirmation_targets(capsys):
    """Issue 34's rule: a default chosen on the tuning targets is judged on the others."""
    from benchmarks.selection_report import print_report

    arms = ["base", "default", "longest", "random10_s0", "random10_s1"]
    res = pl.DataFrame({"target": ["tune"] * 5 + ["new"] * 5, "arm": arms * 2,
                        "eval_loss": [3.0, 1.0, 2.0, 2.0, 2.1, 3.0, 2.4, 2.2, 2.0, 2.1]})
    print_report(res, 0.1, 0.3, wall_s=1.0, sets={"tuning": ["tune"], "confirmation": ["new"]})
    out = capsys.readouterr().out
    assert out.index("=== tuning targets (1) ===") < out.index("=== confirmation targets (1) ===")
    lines = out.strip().splitlines()
    assert "over the confirmation targets" in out
    assert lines[-1] == f"default_vs_random10={2.4 / 2.05:.4f}"  # the unseen target's ratio, not the tuned one's
    assert lines[-2] == f"default_vs_longest={2.4 / 2.2:.4f}"


def test_confirmation_targets_split_without_leaks(shared_datasets, monkeypatch):
    """Every confirmation target has 150 held-out rows and none of them reaches its pool."""
    monkeypatch.setenv("SHARED_DATASETS", str(shared_datasets))
    from benchmarks.selection import CONFIRMATION, TUNING
    from benchmarks.selection_data import split, t0_rows

    assert not set(CONFIRMATION) & set(TUNING) and len(CONFIRMATION) >= 15
    t0 = t0_rows()
    for name in CONFIRMATION:
        target, held, pool = split(t0, name, 100, 150, 400, 0)
        assert held.height == 150 and target.height >= 20, name
        assert not set(held["id"]) & set(pool["id"]) and not set(target["id"]) & set(held["id"]), name
        if name.startswith("loto:"):
            assert name.removeprefix("loto:") not in set(meta_field(pool, "task_type")), name
        else:  # quoref / alpaca_eval: no pool row quotes a held-out question
            assert not any(q in p for q in held["instruction"] for p in pool["instruction"]), name


def test_the_length_candidate_adds_response_length_to_the_default_fusion():
    """benchmarks.selection's default_len arm: the shipped fusion plus the length baseline's column,
    and on a toy pool it moves the pick towards long rows without dropping the fused scores."""
    from instruct_selectors.policies import select

    from benchmarks.selection import with_length

    steps = with_length([{"top_k": {"fuse": ["a", "b"], "fraction": 0.5}}])
    assert steps == [{"top_k": {"fuse": ["a", "b", "response_chars"], "fraction": 0.5}}]
    assert with_length([{"top_k": {"column": "a", "k": 2}}]) == [{"top_k": {"k": 2, "fuse": ["a", "response_chars"]}}]
    # a and b disagree: the two-way fusion keeps each one's best; length breaks the tie towards long rows
    pool = pl.DataFrame({"id": ["r0", "r1", "r2", "r3"], "a": [4.0, 3.0, 2.0, 1.0], "b": [1.0, 2.0, 3.0, 4.0],
                         "response_chars": [1.0, 2.0, 300.0, 400.0]})

    def kept(top):
        return sorted(select(pool, [{"top_k": {**top, "k": 2}}])[0].filter(pl.col("keep"))["id"].to_list())

    assert kept({"fuse": ["a", "b"]}) == ["r0", "r3"]
    assert kept({"fuse": with_length([{"top_k": {"fuse": ["a", "b"]}}])[0]["top_k"]["fuse"]}) == ["r2", "r3"]


def test_arms_are_evaluated_in_the_dtype_asked_for():
    """--eval-dtype: float32 evaluates the model itself, bfloat16 a copy (the trained arm is untouched)."""
    import torch

    from benchmarks.selection import as_eval_dtype

    model = torch.nn.Linear(2, 2)
    assert as_eval_dtype(model, "float32") is model
    copy = as_eval_dtype(model, "bfloat16")
    assert copy is not model and copy.weight.dtype == torch.bfloat16 and model.weight.dtype == torch.float32


def test_pick_profiles_name_the_score_that_pulls_the_picks_short():
    """benchmarks.selection_picks: a score that prefers short answers correlates negatively with
    length and its top rows are the short kind; one that prefers long rows the opposite."""
    from benchmarks.selection_picks import profiles

    rows = [make_example(f"q{i}", "x" * (2 + i % 2 * 200), meta={"task_type": "label" if i % 2 == 0 else "summary"})
            for i in range(40)]
    pool = to_table(rows).with_columns(
        score_short=pl.Series([float(i % 2 == 0) + i / 100 for i in range(40)]),
        score_long=pl.Series([float(i % 2 == 1) + i / 100 for i in range(40)]))
    found = {name: (rho, prof) for name, rho, prof in profiles(pool, ["score_short", "score_long"], fraction=0.25)}
    short_rho, short_top = found["score_short"]
    long_rho, long_top = found["score_long"]
    assert short_rho < -0.5 < 0.5 < long_rho
    assert short_top["median_chars"] == 2 and short_top["types"] == [("label", 10)]
    assert long_top["median_chars"] == 202 and long_top["types"] == [("summary", 10)]
    assert "fusion + length" in found


def test_the_length_window_keeps_the_default_ranking_among_rows_as_long_as_the_target_answers():
    from benchmarks.selection_variants import length_window_ranking

    chars = np.concatenate([np.full(10, 8.0), np.full(10, 400.0)])
    scored = pl.DataFrame({"a": chars + np.arange(20) % 4, "b": chars - np.arange(20) % 3, "response_chars": chars})
    fused = reciprocal_rank_fusion(scored["a"].to_numpy(), scored["b"].to_numpy())
    assert (chars[np.argsort(-fused, kind="stable")[:4]] == 400).all()  # the fusion alone takes long rows
    short = length_window_ranking(scored, ["a", "b"], [6, 8, 9, 10, 12])
    top = np.argsort(-short, kind="stable")[:4]
    assert (chars[top] == 8).all()  # a short-answer target: short rows first ...
    assert list(top) == [i for i in np.argsort(-fused, kind="stable") if chars[i] == 8][:4]  # ... in the fusion's order
    long = length_window_ranking(scored, ["a", "b"], [300, 350, 500])
    assert (chars[np.argsort(-long, kind="stable")[:4]] == 400).all()
