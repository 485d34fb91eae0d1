"""The run proves its own selection (issue 21): the target split (pure), the random arm's draw, the
verdict, and the condition stage seeing no held-out row. The flow end to end is in
tests/test_selection_proof_flow.py."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from instruct_selectors.control_arms import candidates, choosing_labels, random_pick
from instruct_selectors.holdout import split_ids, split_table

from flows.config import load_config
from flows.pipeline import run_stage
from flows.run_folder import RunFolder
from pipelines.finetune.compare import (
    BEAT,
    NOISE,
    WORSE,
    comparison,
    comparison_text,
    gain_line,
    selection_gain,
)
from pipelines.shards import atomic_write_jsonl

IDS = [f"id{i:02d}" for i in range(10)]


# --------------------------------------------------------------------------- the split
def test_split_is_disjoint_covering_seeded_and_sized():
    s = split_ids(IDS, 0.3, seed=0)
    assert set(s.conditioning).isdisjoint(s.held_out) and set(s.conditioning) | set(s.held_out) == set(IDS)
    assert len(s.held_out) == 3 and s.note is None
    assert split_ids(list(reversed(IDS)), 0.3, seed=0) == s  # the file's order does not matter
    assert split_ids(IDS, 0.3, seed=0) == s  # deterministic
    assert any(split_ids(IDS, 0.3, seed=k).held_out != s.held_out for k in range(1, 6))  # the seed matters
    assert len(split_ids(IDS[:2], 0.3, 0).held_out) == 1  # at least one row from 2
    assert len(split_ids(IDS[:2], 0.9, 0).conditioning) == 1  # and at least one left to condition on
    assert len(split_ids(IDS + IDS, 0.3, 0).held_out) == 3  # a repeated row is one row: one side only


def test_a_target_too_small_to_split_says_so():
    one = split_ids(IDS[:1], 0.3, 0)
    assert one.held_out == [] and one.conditioning == IDS[:1] and "too few to split" in one.note
    assert "nothing held out" in split_ids(IDS, 0.0, 0).note
    with pytest.raises(ValueError):
        split_ids(IDS, 1.0, 0)


def test_split_table_keeps_rows_with_their_id():
    table = pl.DataFrame({"id": IDS + ["id00"], "x": list(range(11))})
    cond, held, split = split_table(table, 0.3, 1)
    assert set(held["id"]) == set(split.held_out) and cond.height + held.height == 11
    assert set(cond["id"]).isdisjoint(held["id"])


# --------------------------------------------------------------------------- the random arm's draw
def test_candidates_are_the_rows_the_choosing_steps_saw():
    steps = [{"dedup": {"near": False}}, {"threshold": {"column": "score_ifd", "max": 1.0}},
             {"top_k": {"column": "score_ifd", "fraction": 0.5}}]
    top = next(iter(choosing_labels(steps)))
    table = pl.DataFrame({"id": ["a", "b", "c", "d", "e"], "keep": [True, False, False, False, True],
                          "dropped_by": [None, "dedup.exact", "threshold(score_ifd<=1.0)", top, None]})
    assert candidates(table, steps)["id"].to_list() == ["a", "d", "e"]


def test_random_pick_is_seeded_sized_and_order_free():
    pick = random_pick(IDS, 4, seed=3)
    assert len(pick) == 4 and set(pick) <= set(IDS)
    assert random_pick(list(reversed(IDS)), 4, seed=3) == pick
    assert any(random_pick(IDS, 4, seed=k) != pick for k in range(4, 9))
    assert random_pick(IDS, 99, 0) == sorted(IDS)


# --------------------------------------------------------------------------- the verdict
def test_selection_gain_verdicts():
    beat = selection_gain(2.0, [2.3, 2.4, 2.5])
    assert beat["selection_gain"] == pytest.approx(0.4) and beat["spread"] == pytest.approx(0.2)
    assert beat["verdict"] == BEAT
    assert selection_gain(2.35, [2.3, 2.4, 2.5])["verdict"] == NOISE
    assert selection_gain(2.8, [2.3, 2.4, 2.5])["verdict"] == WORSE
    assert selection_gain(2.0, []) is None
    line = gain_line(selection_gain(2.0, [2.1]))
    assert line.startswith("selection_gain=0.1") and BEAT in line and "one seed" in line
    assert gain_line(None).startswith("selection_gain=n/a")


def test_comparison_table_has_base_selected_random_and_whole():
    sel = {"rows": 4, "eval_loss": 2.0, "eval_loss_before": 3.0, "exact_match": 0.5, "f1": 0.6,
           "exact_match_before": 0.0, "f1_before": 0.1}
    arms = {"selected": sel, "random-s0": {"rows": 4, "eval_loss": 2.2, "exact_match": 0.25, "f1": 0.3},
            "random-s1": {"rows": 4, "eval_loss": 2.4, "exact_match": 0.0, "f1": 0.2},
            "whole": {"rows": 9, "eval_loss": 1.9}}
    cmp = comparison(arms)
    assert [r["arm"] for r in cmp["rows"]] == ["base (untrained)", "selected", "random (2 seeds)",
                                               "whole (every candidate)"]
    rnd = cmp["rows"][2]
    assert rnd["held-out loss"] == pytest.approx(2.3) and rnd["loss min-max"] == "2.2-2.4"
    assert cmp["columns"] == ["arm", "rows", "held-out loss", "loss min-max", "exact match", "f1"]
    assert cmp["selection_gain"]["verdict"] == BEAT
    text = comparison_text(cmp)
    assert "random (2 seeds)" in text and text.splitlines()[-1].startswith("selection_gain=0.3")
    assert json.loads(json.dumps(cmp)) == cmp  # goes into a JSON record as is


# --------------------------------------------------------------------------- the condition stage
def test_no_held_out_id_reaches_the_condition_stage(tmp_path, monkeypatch):
    import instruct_selectors.color_filter as color_filter
    import instruct_selectors.target_sim as target_sim

    target = tmp_path / "target.jsonl"
    atomic_write_jsonl([{"question": f"What is in box {i}?", "context": f"Box {i} holds {i} pears.",
                         "answer": str(i)} for i in range(10)], target)
    cfg = load_config(overrides=["model.model=tiny", "model.backend=hf", "score.scores=[color, target_sim]",
                                 f"score.target={target}", f"run.out_dir={tmp_path / 'runs'}",
                                 "select.steps=[{top_k: {column: score_color, fraction: 0.5}}]"])
    run = RunFolder(cfg.run_dir())
    run.claim(cfg.fingerprint(), cfg.model_dump_json())
    seen: dict[str, list[str]] = {}

    def fake_conditional(model, table, cache_dir, **kw):
        seen["build_conditional"] = table["id"].to_list()
        return tmp_path / "cond"

    def fake_rows(llm, table, pooling="response", with_context=False):
        seen["target_rows"] = table["id"].to_list()
        return np.ones((table.height, 4), dtype=np.float32)

    monkeypatch.setattr(color_filter, "build_conditional", fake_conditional)
    monkeypatch.setattr(target_sim, "target_rows", fake_rows)
    rec = run_stage("condition", run, cfg)
    split = json.loads((run.conditional / "target-split.json").read_text())
    assert len(split["held_out"]) == 3 and len(split["conditioning"]) == 7
    assert rec["target_split"]["held_out"] == 3 and rec["notes"] == []
    for name, ids in seen.items():
        assert set(ids).isdisjoint(split["held_out"]), f"{name} saw a held-out row"
        assert sorted(ids) == split["conditioning"]
    assert seen.keys() == {"build_conditional", "target_rows"}

    one = tmp_path / "one.jsonl"  # too small to split: a note, not a silent leak
    atomic_write_jsonl([{"question": "Q?", "context": "", "answer": "A"}], one)
    cfg1 = cfg.model_copy(update={"score": cfg.score.model_copy(update={"target": str(one)})})
    assert "too few to split" in run_stage("condition", run, cfg1)["notes"][0]
