"""The judge score: strict answer format, bounded retries, rejects, and the score stage wiring."""

from __future__ import annotations

import json
import re

import polars as pl
import pytest
from instruct_selectors.scores.judge import COLUMN, SCHEMA, judge_rows, parse_rating

from flows.config import load_config
from flows.pipeline import run_stage
from flows.run_folder import RunFolder
from pipelines.llm.serve import OpenAICompatServer
from pipelines.schema import make_example, to_table
from pipelines.shards import atomic_write_jsonl, list_shards


@pytest.mark.parametrize("text, rating", [
    ("Rating: 4", 4), ('{"rating": 5}', 5), ("**Rating:** 2", 2), ("rating = 3/5", 3),
    ("The answer is fine.\nRating: 1", 1), ("Rating: 4\nRating: 4", 4),
])
def test_parse_rating_accepts_the_strict_formats(text, rating):
    assert parse_rating(text) == rating


@pytest.mark.parametrize("text, reason", [
    ("Good answer, I would give it a four.", "no 'Rating: N'"), ("Rating: 7", "not an integer from 1 to 5"),
    ("Rating: 2 ... on reflection Rating: 5", "several different ratings"), ('{"rating": true}', "not an integer"),
    ("", "no 'Rating: N'"), ("4", "no 'Rating: N'"),
])
def test_parse_rating_rejects_anything_else_with_a_reason(text, reason):
    with pytest.raises(ValueError, match=re.escape(reason)):
        parse_rating(text)


def _instruction(ask) -> str:
    return re.search(r"### Instruction\n(.*?)\n", ask.text).group(1)


def _scripted(script: dict[str, list[str]]):
    """Known answers per instruction: ``script[instruction]`` is a list of answers, one per attempt."""

    def answer(ask):
        answers = script[_instruction(ask)]
        return answers[min(ask.attempt, len(answers) - 1)]

    return answer


def _table(instructions):
    return to_table([make_example(i, f"answer to {i}", source="test") for i in instructions])


def test_judge_rows_retries_garbage_and_keeps_what_never_parses(fake_llm):
    script = {"a": ["Rating: 5"], "b": ["great!", "Rating: 2"], "c": ["no idea", "still none", "nope"]}
    llm = fake_llm(_scripted(script))
    judged = judge_rows(_table(["a", "b", "c"]), llm, retries=2)
    assert judged.scores == [5, 2, None]
    assert judged.calls == 3 + 2 + 1 and judged.retried == 2 + 1
    (reject,) = judged.rejects
    assert reject["raw"] == "nope" and reject["attempts"] == 3 and "no 'Rating: N'" in reject["reason"]
    first, retry = llm.calls[0].sampling, llm.calls[1].sampling
    assert first.temperature == 0.0 and retry.temperature > 0  # greedy first
    assert judged.column().to_list() == [5.0, 2.0, None]
    assert first.json_schema is None


def test_judge_asks_a_constrained_backend_for_the_schema(fake_llm):
    llm = fake_llm(_scripted({"a": ['{"rating": 3}']}), structured_output=True)
    assert judge_rows(_table(["a"]), llm).scores == [3]
    assert llm.calls[0].sampling.json_schema == SCHEMA


def _served(ask) -> str:
    """A judge behind the project's OpenAI-compatible server: row i gets rating i % 5 + 1, and
    the instruction 'What is 3 plus 3?' always gets garbage."""
    i = int(re.search(r"What is (\d+) plus", ask.text).group(1))
    return "I cannot rate this." if i == 3 else f"Rating: {i % 5 + 1}"


def test_score_stage_writes_score_judge_rejects_and_counts(tmp_path, fake_llm):
    rows = [{"instruction": f"What is {i} plus {i}?", "output": f"It is {2 * i}."} for i in range(6)]
    atomic_write_jsonl(rows, tmp_path / "in.jsonl")
    with OpenAICompatServer(fake_llm(_served, name="served", model_id="served"), model_name="served") as server:
        cfg = load_config(overrides=[
            "generate.taxonomy.enabled=false", "generate.text.enabled=false",
            f"generate.inputs=[{tmp_path / 'in.jsonl'}]", "model.model=tiny", "model.backend=hf",
            "score.scores=[ifd, judge]", "run.shard_size=4", f"run.out_dir={tmp_path / 'runs'}",
            "score.models.judge.backend=openai", "score.models.judge.model=served",
            f"score.models.judge.base_url={server.url}", "score.options.judge.retries=1",
            "select.steps=[{threshold: {column: score_judge, min: 3}}]",
        ])
        run = RunFolder(cfg.run_dir())
        run.claim(cfg.fingerprint(), cfg.model_dump_json())
        run_stage("collect", run, cfg)
        record = run_stage("score", run, cfg)
        scored = pl.concat([pl.read_parquet(p) for p in list_shards(run.scored)])
        assert scored[COLUMN].to_list() == [1.0, 2.0, 3.0, None, 5.0, 1.0]
        assert record["rejects"] == 1 and record["models"] == {"judge": "served"}
        (rejects_file,) = run.score_rejects_files()
        reject = json.loads(rejects_file.read_text())
        assert reject["raw"] == "I cannot rate this." and reject["attempts"] == 2
        # resumable by shard: a second pass redoes nothing
        mtimes = [p.stat().st_mtime_ns for p in list_shards(run.scored)]
        run_stage("score", run, cfg)
        assert [p.stat().st_mtime_ns for p in list_shards(run.scored)] == mtimes
    selected = run_stage("select", run, cfg)
    assert selected["rows_out"] == 2  # ratings 3 and 5; the null is not kept by a min threshold


def test_a_judge_request_that_fails_for_good_is_a_reject_not_a_crash(fake_llm):
    llm = fake_llm(_scripted({"a": ["Rating: 4"]}), fail=lambda ask: _instruction(ask) == "b")
    judged = judge_rows(_table(["a", "b"]), llm)
    assert judged.scores == [4, None]
    (reject,) = judged.rejects
    assert reject["reason"] == "llm request failed: HTTP 503" and reject["http_attempts"] == 6
