"""The train stage's control arms on the tiny model, stage by stage: the held-out target rows
decontaminate the pool and are what every arm evaluates on, the random arms draw as many rows as
the selection from the rows it chose from, the table and the selection_gain line reach the record,
the report and the dataset card, and a finished arm is not trained again."""

from __future__ import annotations

import json

import polars as pl
from fake_hub import FakeHub

from flows.config import load_config
from flows.pipeline import run_stage
from flows.run_folder import RunFolder
from flows.target_parts import target_parts
from pipelines.shards import atomic_write_jsonl


def _stat(path):
    st = path.stat()
    return st.st_ino, st.st_mtime_ns


def test_train_arms_compare_the_selection_with_random_and_resume(tmp_path, monkeypatch):
    target, data = tmp_path / "target.jsonl", tmp_path / "in.jsonl"
    atomic_write_jsonl([{"question": f"How many pears does box {i} hold?",
                         "context": f"The storage room has many boxes and box number {i} holds exactly {i} pears today.",
                         "answer": str(i)} for i in range(6)], target)
    overrides = [
        "generate.taxonomy.enabled=false", "generate.text.enabled=false", f"generate.inputs=[{data}]",
        "model.model=tiny", "model.backend=hf", "model.max_length=128", "score.scores=[ifd]",
        f"score.target={target}", "run.shard_size=8", f"run.out_dir={tmp_path / 'runs'}",
        "select.steps=[{dedup: {near: false}}, {top_k: {column: score_ifd, fraction: 0.5}}]",
        "train.method=lora", "train.max_steps=2", "train.compare=[random, whole]", "train.compare_seeds=2",
    ]
    cfg = load_config(overrides=overrides)
    held = target_parts(cfg).held_out
    assert held.height == 2
    rows = [{"instruction": f"What is {i} plus {i}?", "input": f"Numbers: {i}." if i % 2 else "",
             "output": f"It is {2 * i}."} for i in range(12)]
    rows.append(dict(rows[3]))  # dedup drops it: not a candidate
    quoted = held.row(0, named=True)  # quotes a held-out row: decontamination drops it
    rows.append({"instruction": "Summarise this.", "input": quoted["context"], "output": "Pears."})
    atomic_write_jsonl(rows, data)
    run = RunFolder(cfg.run_dir())
    run.claim(cfg.fingerprint(), cfg.model_dump_json())
    for stage in ("collect", "score", "select"):
        run_stage(stage, run, cfg)
    selected = pl.read_parquet(run.selected)
    assert f"{target.name} (held out)" in run.load_record("select")["decontamination"]["against"]
    assert selected.filter(pl.col("context") == quoted["context"])["dropped_by"].to_list() == ["decontaminate"]
    exported = run_stage("export", run, cfg)

    record = run_stage("train", run, cfg)
    assert set(record["arms"]) == {"selected", "random-s0", "random-s1", "whole"}
    eval_rows = [json.loads(line) for line in (run.train / "target-held-out.jsonl").read_text().splitlines()]
    assert sorted(r["question"] for r in eval_rows) == sorted(held["instruction"])  # QA stays QA
    chosen_from = selected.filter(pl.col("keep") | pl.col("dropped_by").str.starts_with("top_k"))
    assert chosen_from.height == 12  # 14 rows, less the duplicate and the contaminated row
    for arm in ("random-s0", "random-s1"):
        drawn = pl.read_parquet(run.train_arm(arm) / "rows.parquet")
        assert set(drawn["id"]) <= set(chosen_from["id"]) and drawn.height == exported["rows_out"] == 6
        assert record["arms"][arm]["rows"] == 6
    assert set(pl.read_parquet(run.train_arm("random-s0") / "rows.parquet")["id"]) != set(
        pl.read_parquet(run.train_arm("random-s1") / "rows.parquet")["id"])
    assert record["arms"]["whole"]["rows"] == 12

    cmp = record["comparison"]
    assert [r["arm"] for r in cmp["rows"]] == ["base (untrained)", "selected", "random (2 seeds)",
                                               "whole (every candidate)"]
    assert {"exact match", "f1"} <= set(cmp["columns"]) and cmp["selection_gain"]["seeds"] == 2
    report = run.path(run_stage("report", run, cfg)["outputs"]["markdown"]).read_text()
    assert "## Does the selection beat random?" in report and "| random (2 seeds) |" in report
    assert "selection_gain=" in report
    # The card, written by the export before training, carries the same table once (before the config).
    card = (run.dataset / "README.md").read_text()
    assert card.count("## Does the selection beat random?") == 1 and "| random (2 seeds) |" in card
    assert card.index("selection_gain=") < card.index("## Configuration")
    assert f"selection_gain={cmp['selection_gain']['selection_gain']:.4g}" in card

    # A finished arm is not trained again; a lost one is, alone.
    done = {arm: _stat(run.train_arm(arm) / "arm.json") for arm in record["arms"]}
    models = {arm: _stat(run.train_arm(arm) / "adapter_model.safetensors") for arm in record["arms"]}
    card_stat = _stat(run.dataset / "README.md")
    run_stage("train", run, cfg)
    assert {arm: _stat(run.train_arm(arm) / "arm.json") for arm in done} == done
    assert _stat(run.dataset / "README.md") == card_stat  # same table: the card is not rewritten
    assert {arm: _stat(run.train_arm(arm) / "adapter_model.safetensors") for arm in done} == models
    (run.train_arm("random-s1") / "arm.json").unlink()
    again = run_stage("train", run, cfg)
    assert _stat(run.train_arm("random-s1") / "adapter_model.safetensors") != models["random-s1"]
    for arm in ("selected", "random-s0", "whole"):
        assert _stat(run.train_arm(arm) / "arm.json") == done[arm]
    assert again["arms"]["random-s0"] == record["arms"]["random-s0"]

    # train.general_path: the user's own instruction data as one more arm; the others stay trained.
    general = tmp_path / "general.jsonl"
    atomic_write_jsonl([{"instruction": f"Name colour {i}.", "output": f"Colour {i} is blue."} for i in range(20)]
                       + [{"instruction": "no output field"}], general)
    with_general = load_config(overrides=[*overrides, f"train.general_path={general}"])
    rec = run_stage("train", run, with_general)
    drawn = pl.read_parquet(run.train_arm("general") / "rows.parquet")
    assert drawn.height == rec["arms"]["general"]["rows"] == 6 and set(drawn["instruction"]) < {
        f"Name colour {i}." for i in range(20)}
    assert json.loads((run.train_arm("general") / "arm.json").read_text())["rejects"] == 1  # counted, not lost
    assert [r["arm"] for r in rec["comparison"]["rows"]][-1] == "general (train.general_path)"
    for arm in ("selected", "random-s0", "whole"):
        assert _stat(run.train_arm(arm) / "arm.json") == done[arm]

    # With --train, the Hub gets the card once the table is on it: the train stage pushes, not the export.
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    hub = FakeHub()
    hub.install(monkeypatch, tmp_path)
    pushing = load_config(overrides=[*overrides, "export.push_to_hub=someone/ab"])
    assert run_stage("export", run, pushing)["pushed"] is None and not hub.files
    pushed = run_stage("train", run, pushing)["pushed"]
    assert pushed["repo_id"] == "someone/ab" and "selection_gain=" in hub.files["README.md"].decode()
