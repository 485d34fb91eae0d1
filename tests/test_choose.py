"""select.auto: the choose stage proxy-trains each candidate ranking and the random arms, grades
them on held-out target rows the train stage never evaluates on, and keeps a candidate only when
it beats the others by more than the random arms' spread."""

from __future__ import annotations

import json

import polars as pl
import pytest
from instruct_selectors.policy_steps import label, parse_steps

from flows.config import ConfigError, load_config
from flows.config_choose import with_ranking
from flows.pipeline import run_stage
from flows.run_folder import RunFolder
from flows.target_parts import target_parts
from pipelines.finetune.compare import choose_ranking
from pipelines.shards import atomic_write_jsonl


def test_a_candidate_is_kept_only_beyond_the_random_spread():
    random = [2.0, 2.1, 2.05]  # spread 0.1
    won = choose_ranking({"default": 1.9, "color": 1.75}, random, "default")
    assert won["kept"] == "color" and won["margin"] == pytest.approx(0.15)
    close = choose_ranking({"default": 1.9, "color": 1.85}, random, "default")
    assert close["kept"] == "default" and "within the random arms' spread" in close["reason"]
    # Beating the default is not enough: it must beat every other candidate by the spread.
    assert choose_ranking({"default": 1.9, "a": 1.7, "b": 1.65}, random, "default")["kept"] == "default"
    assert choose_ranking({"default": 1.8, "a": 1.8}, random, "default")["kept"] == "default"  # a tie
    worse = choose_ranking({"default": 2.3, "a": 2.5}, random, "default")
    assert worse["kept"] == "default" and "did not beat the random mean" in worse["reason"]
    # Named, random picks are a candidate: their mean 2.05 beats both rankings by more than 0.1 ...
    assert choose_ranking({"default": 2.3, "a": 2.5}, random, "default", random="random")["kept"] == "random"
    # ... but not when a ranking is within the spread of it.
    assert choose_ranking({"default": 2.3, "a": 2.1}, random, "default", random="random")["kept"] == "default"


def test_a_candidate_replaces_the_last_top_k_ranking_and_keeps_its_count():
    specs = [{"dedup": {}}, {"top_k": {"column": "score_ifd", "fraction": 0.5}},
             {"top_k": {"fuse": ["score_target_sim", "score_color"], "k": 3}}]
    steps = parse_steps(specs)
    assert [s.spec() for s in with_ranking(steps, ["score_color"])[1:]] == [
        specs[1], {"top_k": {"column": "score_color", "k": 3}}]
    assert with_ranking(steps, ["score_ifd", "score_color"])[2].spec() == {
        "top_k": {"fuse": ["score_ifd", "score_color"], "k": 3}}


@pytest.mark.parametrize(("overrides", "message"), [
    (["select.auto=[judge]"], "'judge' is not a score this run computes"),
    (["select.auto=[color+nope]"], "'nope' is not a score this run computes"),
    (["select.auto=[color]", "select.steps=[{dedup: {}}]"], "select.steps has none"),
    (["select.auto=[color]", "score.target_holdout=0"], "score.target_holdout > 0"),
])
def test_auto_config_errors_name_the_problem(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=overrides)


def test_choose_stage_grades_candidates_on_rows_train_never_sees(tmp_path):
    target, data = tmp_path / "target.jsonl", tmp_path / "in.jsonl"
    atomic_write_jsonl([{"instruction": f"Add {i} and {i + 1}.", "response": f"The sum is {2 * i + 1}."}
                        for i in range(10)], target)
    rows = [{"instruction": f"What is {i} times {i % 3}?", "output": f"It is {i * (i % 3)}." + " Indeed." * (i % 4)}
            for i in range(16)]
    atomic_write_jsonl(rows, data)
    cfg = load_config(overrides=[
        "generate.taxonomy.enabled=false", "generate.text.enabled=false", f"generate.inputs=[{data}]",
        "model.model=tiny", "model.backend=hf", "model.max_length=64", "score.scores=[ifd, target_sim]",
        f"score.target={target}", "score.target_holdout=0.4", "run.shard_size=8", f"run.out_dir={tmp_path / 'runs'}",
        "select.steps=[{dedup: {near: false}}, {top_k: {column: score_ifd, fraction: 0.5}}]",
        "select.auto=[target_sim, ifd+target_sim]", "select.proxy.steps=2", "select.proxy.seeds=2",
        "train.method=lora", "train.max_steps=1", "train.compare=[]",
    ])
    parts = target_parts(cfg)
    assert parts.held_out.height == 4 and parts.choosing.height == 2 and parts.evaluation.height == 2
    assert set(parts.choosing["id"]).isdisjoint(parts.evaluation["id"])
    run = RunFolder(cfg.run_dir())
    run.claim(cfg.fingerprint(), cfg.model_dump_json())
    for stage in ("collect", "condition", "score"):
        run_stage(stage, run, cfg)

    record = run_stage("choose", run, cfg)
    arms = [r["arm"] for r in record["table"]]
    assert arms[0] == "base (untrained)" and arms[1] == "default" and arms[-1] == "random (2 seeds)"
    assert {a.split(" ")[0] for a in arms[2:-1]} == {"target_sim", "ifd+target_sim"}
    assert all(r["rows"] == 8 for r in record["table"][1:])  # each arm: as many rows as the default keeps
    graded = [json.loads(line)["instruction"] for line in (run.choose / "target-choosing.jsonl").read_text().splitlines()]
    assert sorted(graded) == sorted(parts.choosing["instruction"])
    # The decision follows the rule on the losses the record shows.
    loss = {r["arm"].split(" ")[0]: r["proxy loss"] for r in record["table"][1:-1]}
    random = [json.loads((run.choose / f"random-s{k}" / "arm.json").read_text())["metrics"]["eval_loss"]
              for k in range(2)]
    assert record["choice"] == choose_ranking(loss, random, "default")
    kept = record["choice"]["kept"]
    columns = {"default": ["score_ifd"], "target_sim": ["score_target_sim"],
               "ifd+target_sim": ["score_ifd", "score_target_sim"]}[kept]
    assert record["steps"] == [s.spec() for s in with_ranking(cfg.select.steps, columns)]

    # The select stage runs the kept ranking; train evaluates on the held-out rows bar the graded ones.
    run_stage("select", run, cfg)
    assert pl.read_json(run.selection_summary)["name"][-1] == label(parse_steps(record["steps"])[-1])
    run_stage("export", run, cfg)
    run_stage("train", run, cfg)
    evaluated = [json.loads(line)["instruction"] for line in (run.train / "target-held-out.jsonl").read_text().splitlines()]
    assert sorted(evaluated) == sorted(parts.evaluation["instruction"])
    report = run.path(run_stage("report", run, cfg)["outputs"]["markdown"]).read_text()
    assert "## Which ranking? (select.auto)" in report and f"Kept: **{kept}**" in report
    assert "Proxy loss on 2 held-out target rows" in report

    # Rerun: every proxy arm is reused, none retrained.
    stamps = {p: p.stat().st_mtime_ns for p in run.choose.glob("*/arm.json")}
    assert run_stage("choose", run, cfg)["choice"] == record["choice"]
    assert {p: p.stat().st_mtime_ns for p in run.choose.glob("*/arm.json")} == stamps
