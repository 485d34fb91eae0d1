"""The guard (issue 34): left unset, select.auto grades the configured selection against random
picks and the longest responses on held-out target rows, whenever the target holds out enough of
them, and ships the length baseline when it wins beyond the random spread, saying so first thing
in the report. The proxy fine-tunes are replaced by fixed losses here: what is tested is the
wiring from their losses to the rows shipped, not training."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
from conftest import run_in_process

import flows.stages.choose as choose
from flows.config import load_config
from flows.target_parts import auto_candidates
from pipelines.shards import atomic_write_jsonl, atomic_write_text


def _files(tmp: Path, target_rows: int) -> list[str]:
    atomic_write_jsonl([{"instruction": f"Explain topic {i} in full.", "response": "A long answer. " * (5 + i % 7)}
                        for i in range(target_rows)], tmp / "target.jsonl")
    atomic_write_jsonl([{"instruction": f"Question {i}: what does item {i} cost?", "input": "",
                         "output": f"It costs {i % 7 + 1} dollars." + " And more words follow." * (i % 5)}
                        for i in range(20)], tmp / "pool.jsonl")
    return ["generate.taxonomy.enabled=false", "generate.text.enabled=false", f"generate.inputs=[{tmp / 'pool.jsonl'}]",
            f"score.target={tmp / 'target.jsonl'}", "model.model=tiny", "model.backend=hf", "score.scores=[ifd]",
            "run.shard_size=8", "select.steps=[{top_k: {column: score_ifd, fraction: 0.25}}]",
            f"run.out_dir={tmp / 'runs'}", "run.name=guarded"]


def test_the_guard_runs_when_the_target_holds_out_enough_rows(tmp_path):
    assert auto_candidates(load_config(overrides=_files(tmp_path, 220))) == ["longest"]  # 66 held out, 33 grade
    assert auto_candidates(load_config(overrides=_files(tmp_path, 40))) == []  # 12 held out: too few to grade
    assert auto_candidates(load_config(overrides=[*_files(tmp_path, 220), "select.auto=false"])) == []
    assert auto_candidates(load_config(overrides=[*_files(tmp_path, 220), "select.auto=[]"])) == []
    assert auto_candidates(load_config(overrides=[*_files(tmp_path, 40), "select.auto=[ifd, longest]"])) == ["ifd", "longest"]
    assert auto_candidates(load_config()) == []  # the default job's 12 target rows: no guard, no cost


def _fake_proxies(losses: dict[str, float]):
    """A train_once that writes each arm's arm.json with a fixed held-out loss instead of training."""
    def train_once(ctx, arm, key, spec, extra):
        rows = pl.read_parquet(Path(spec["source"])).height
        done = {"arm": arm, "made_from": key, "metrics": {"eval_loss": losses[arm], "rows": rows,
                                                           "eval_loss_before": 4.0}}
        atomic_write_text(Path(spec["out"]) / "arm.json", json.dumps(done))
        return done
    return train_once


def _run(tmp: Path, overrides: list[str]):
    return run_in_process(load_config(overrides=overrides))


def _guarded(tmp: Path, monkeypatch, losses: dict[str, float]):
    """A guarded run whose proxies score ``losses``: the run, its stage records, the report's opening."""
    monkeypatch.setattr(choose, "train_once", _fake_proxies(losses))
    run, records = _run(tmp, _files(tmp, 220))
    return run, records, (run.root / "report.md").read_text().split("## Stages")[0]


def test_when_the_held_out_rows_say_the_default_loses_the_run_ships_the_longest_and_says_so(tmp_path, monkeypatch):
    run, records, first = _guarded(tmp_path, monkeypatch, {"default": 3.0, "longest": 2.0, "random-s0": 2.9,
                                                           "random-s1": 2.95, "random-s2": 3.05})
    assert "choose" in records and records["choose"]["choice"]["kept"] == "longest"
    selected = pl.read_parquet(run.selected)
    kept = selected.filter(pl.col("keep"))
    lengths = selected["response"].str.len_chars()
    assert kept.height == 5 and kept["response"].str.len_chars().min() >= lengths.sort(descending=True)[4]
    assert "Selection kept: longest" in first and "beat the untrained model" in first


def test_when_nothing_beats_the_default_beyond_the_spread_it_stays(tmp_path, monkeypatch):
    _, records, first = _guarded(tmp_path, monkeypatch, {"default": 3.0, "longest": 2.95, "random-s0": 2.9,
                                                         "random-s1": 3.0, "random-s2": 3.1})
    assert records["choose"]["choice"]["kept"] == "default"
    assert records["select"]["steps"][-1]["name"] == "top_k(score_ifd, fraction=0.25)"
    assert "Selection kept: default" in first


def test_when_random_picks_beat_every_ranking_the_run_ships_a_random_pick_and_says_so(tmp_path, monkeypatch):
    run, records, first = _guarded(tmp_path, monkeypatch, {"default": 3.4, "longest": 3.35, "random-s0": 3.2,
                                                           "random-s1": 3.25, "random-s2": 3.3})
    assert records["choose"]["choice"]["kept"] == "random"
    assert records["select"]["steps"][-1]["name"] == "ratio(fraction=0.25, seed=0)"
    assert pl.read_parquet(run.selected)["keep"].sum() == 5
    assert "Selection kept: random" in first and "beat the untrained model" in first


def test_the_proxies_train_in_the_dtype_asked_for_and_a_new_dtype_retrains_them(tmp_path, monkeypatch):
    seen = []
    fake = _fake_proxies({"default": 3.0, "longest": 2.95, "random-s0": 2.9, "random-s1": 3.0, "random-s2": 3.1})

    def train_once(ctx, arm, key, spec, extra):
        seen.append((spec["options"]["bf16"], key))
        return fake(ctx, arm, key, spec, extra)

    monkeypatch.setattr(choose, "train_once", train_once)
    _run(tmp_path, [*_files(tmp_path, 220), "select.proxy.dtype=float32"])
    _run(tmp_path, [*_files(tmp_path, 220), "select.proxy.dtype=bfloat16", "run.name=guarded-bf16"])
    fp32, bf16 = seen[: len(seen) // 2], seen[len(seen) // 2:]
    assert {b for b, _ in fp32} == {False} and {b for b, _ in bf16} == {True}
    assert not {k for _, k in fp32} & {k for _, k in bf16}  # resume is keyed by the dtype trained in
    assert choose.proxy_bf16("float32") is False and choose.proxy_bf16("bfloat16") is True
