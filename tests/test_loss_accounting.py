"""Nothing lost silently in a run: rows truncated for scoring and null scores are counted in the
score record and said in the report; io.strict_encoding reaches the readers; rejects files are
named by one rule (no ``rejects-x.jsonl.jsonl``, no two inputs sharing one file)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.config import load_config
from flows.pipeline import check_inputs, run_stage
from flows.run_folder import RunFolder
from pipelines.io import InputError
from pipelines.shards import atomic_write_jsonl, list_shards, rejects_file


def _run(tmp_path: Path, data: Path, *overrides: str):
    cfg = load_config(
        overrides=[
            "generate.taxonomy.enabled=false",
            "generate.text.enabled=false",
            f"generate.inputs=[{data}]",
            "model.model=tiny",
            "model.backend=hf",
            "score.scores=[ifd, ctx_loss]",
            "run.shard_size=4",
            f"run.out_dir={tmp_path / 'runs'}",
            "select.steps=[{top_k: {column: score_ifd, fraction: 0.5}}]",
            *overrides,
        ]
    )
    run = RunFolder(cfg.run_dir())
    run.claim(cfg.fingerprint(), cfg.model_dump_json())
    return run, cfg


def test_score_record_counts_truncated_rows_and_null_scores_and_the_report_says_so(tmp_path):
    long_answer = " ".join(f"word{i}" for i in range(400))  # far over max_length=64 tokens on its own
    rows = [
        {
            "instruction": f"What is {i} plus {i}?",
            "input": f"Numbers: {i}." if i % 2 else "",
            "output": long_answer if i == 3 else f"It is {2 * i}.",
        }
        for i in range(6)
    ]
    data = tmp_path / "in.jsonl"
    atomic_write_jsonl(rows, data)
    run, cfg = _run(tmp_path, data, "model.max_length=64")
    run_stage("collect", run, cfg)
    record = run_stage("score", run, cfg)
    cut = record["truncation"]
    assert (cut["rows"], cut["truncated"], cut["response_truncated"], cut["max_length"]) == (6, 1, 1, 64)
    assert cut["shards_counted"] == cut["shards"] == 2
    # ctx_loss is undefined without context: rows 0, 2 and 4 have none.
    assert record["nulls"] == {"score_ctx_loss": {"null": 3, "no_context": 3, "other": 0}}
    notes = " | ".join(record["notes"])
    assert "1 of 6 rows truncated to model.max_length=64 tokens" in notes
    assert "score_ctx_loss null for 3 of 6 rows: 3 without context" in notes
    assert run.load_record("score")["truncation"] == cut  # saved as stages/score.json

    # Resumed: shards and their counts are reused, the record says the same (and that it reused them).
    again = run_stage("score", run, cfg)
    assert again["truncation"] == cut and again["notes"][1:] == record["notes"][1:]
    assert record["notes"][0].startswith("6 rows rescored") and again["notes"][0].startswith("0 rows rescored (0 shards), 6 reused")

    run_stage("select", run, cfg)
    report = run.path(run_stage("report", run, cfg)["outputs"]["markdown"]).read_text()
    section = report.split("## Cut or left out")[1].split("\n## ")[0]
    assert "**score**: 1 of 6 rows truncated" in section and "score_ctx_loss null for 3 of 6 rows" in section


def test_nothing_truncated_says_nothing_about_truncation(tmp_path):
    rows = [{"instruction": f"Say {i}.", "input": "ctx", "output": f"{i}."} for i in range(3)]
    data = tmp_path / "in.jsonl"
    atomic_write_jsonl(rows, data)
    run, cfg = _run(tmp_path, data)
    run_stage("collect", run, cfg)
    record = run_stage("score", run, cfg)
    assert record["truncation"]["truncated"] == 0 and record["nulls"] == {}
    assert not any("truncat" in note or "null" in note for note in record["notes"])


def _bad_byte_input(tmp_path: Path) -> Path:
    lines = [
        json.dumps({"instruction": f"Question {i}?", "output": f"Answer {i}."}).encode() for i in range(24)
    ]
    lines[3] = b'{"instruction": "caf\xe9?", "output": "x"}'
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_io_strict_encoding_reaches_check_inputs_and_collect(tmp_path):
    data = _bad_byte_input(tmp_path)
    run, cfg = _run(tmp_path, data)
    assert check_inputs(cfg)[str(data)] == 23
    record = run_stage("collect", run, cfg)
    assert (record["rows_in"], record["rows_out"], record["rejects"]) == (24, 23, 1)
    (rejects,) = run.examples.glob("rejects-*.jsonl")
    assert rejects == run.input_rejects(str(data)) and not rejects.name.endswith(".jsonl.jsonl")
    (reject,) = [json.loads(x) for x in rejects.read_text().splitlines()]
    assert reject["line"] == 4 and reject["byte_offset"] == data.read_bytes().index(b"\xe9")

    strict, strict_cfg = _run(tmp_path, data, "io.strict_encoding=true")
    with pytest.raises(InputError, match=r"in\.jsonl:4: not valid UTF-8 \(byte 0xe9 at byte offset"):
        check_inputs(strict_cfg)
    with pytest.raises(InputError, match="not valid UTF-8"):
        run_stage("collect", strict, strict_cfg)
    assert not list_shards(strict.examples)


def test_rejects_files_are_named_once():
    assert rejects_file("f", "data.jsonl").name == "rejects-data.jsonl"
    assert rejects_file("f", "dir/data.jsonl.gz").name == "rejects-data.jsonl"
    assert rejects_file("f", "v1.2.jsonl").name == "rejects-v1.2.jsonl"  # a dot in the name is kept
    assert rejects_file("f", "my data?.json").name == "rejects-my_data_.jsonl"
    run = RunFolder(Path("r"))
    a, b = run.input_rejects("a/train.jsonl"), run.input_rejects("b/train.jsonl")
    assert a != b and a.name.startswith("rejects-input-train-") and a.suffixes == [".jsonl"]
    assert run.input_rejects("a/train.jsonl") == a  # stable: a resumed run finds it again
    assert run.score_rejects(3).name == "rejects-judge-00003.jsonl"
