"""Passes and targets are open sets (issue 36): a user's score adds its own prompt form and its own
target array, named in its declaration, with no edit to the package."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from instruct_selectors.score import plan_passes, score_rows
from instruct_selectors.scores.base import Score, Target
from pydantic import BaseModel, ConfigDict

from flows.config import load_config
from flows.pipeline import run_stage
from flows.run_folder import RunFolder
from flows.stages.condition import targets_needed
from pipelines.llm.base import LossRequest
from pipelines.shards import atomic_write_jsonl


def _terse(instruction, context, response):
    """A prompt form of the user's: the first word of the instruction only."""
    return LossRequest([{"role": "user", "content": instruction.split()[0]}], response)


def _terse_gap(inputs):
    return inputs.passes["prior/terse"]["loss"] - inputs.passes["prior/full"]["loss"]


TERSE_GAP = Score(name="terse_gap", column="score_terse_gap", compute=_terse_gap, passes=("prior/full", "prior/terse"),
                  prompts={"terse": _terse}, definition="response loss after one word minus after the prompt")

BUILDS: list[int] = []  # rows each Target.build saw (the test reads how often it ran)


class Scale(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scale: float = 1.0


def _mean_length(inputs):
    BUILDS.append(inputs.rows.height)
    return np.array([inputs.rows["response"].str.len_chars().mean() * inputs.options.scale])


def _length_gap(inputs):
    return inputs.table["response"].str.len_chars().to_numpy() - inputs.target["mean_length"][0]


LENGTH_GAP = Score(name="length_gap", column="score_length_gap", compute=_length_gap, options=Scale,
                   target=Target("mean_length", _mean_length, "the target responses' mean length"),
                   definition="response characters minus the target responses' mean")


class _PromptEcho:
    """A stand-in backend: a request's loss is the length of its prompt's user text."""

    def __init__(self):
        self.requests: list[LossRequest] = []

    def loss(self, requests, **_):
        self.requests += requests

        class R:
            def __init__(self, mean):
                self.mean, self.token_nll, self.extras = mean, None, {}

        return [R(float(len(r.prompt[0]["content"]) if r.prompt else 0)) for r in requests]


def test_a_scores_own_prompt_form_is_a_pass_run_once_beside_the_built_in_ones():
    assert [p.name for p in plan_passes([TERSE_GAP])] == ["prior/full", "prior/terse"]
    table = pl.DataFrame({"instruction": ["Name three cities", "Sum it"], "context": ["", "2 and 3"],
                          "response": ["Oslo", "5"]})
    llm = _PromptEcho()
    scored, _ = score_rows(table, [TERSE_GAP], {"prior": llm})
    assert len(llm.requests) == 4  # two rows, two passes
    assert [r.prompt[0]["content"] for r in llm.requests[2:]] == ["Name", "Sum"]
    full = [len(r.prompt[0]["content"]) for r in llm.requests[:2]]
    assert scored["score_terse_gap"].to_list() == [4.0 - full[0], 3.0 - full[1]]


def test_a_pass_on_an_unknown_prompt_or_a_shadowed_one_is_refused():
    with pytest.raises(ValueError, match="prompt in"):
        Score(name="x", column="score_x", compute=len, passes=("prior/nope",))
    with pytest.raises(ValueError, match="is built in"):
        Score(name="x", column="score_x", compute=len, passes=("prior/full",), prompts={"full": _terse})
    with pytest.raises(ValueError, match="is built in"):
        Score(name="x", column="score_x", compute=len, target=Target("target_matrix", _mean_length))
    other = Score(name="y", column="score_y", compute=len, passes=("prior/terse",), prompts={"terse": lambda *a: a})
    with pytest.raises(ValueError, match="differently"):
        plan_passes([TERSE_GAP, other])


@pytest.fixture()
def run_and_cfg(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    rows = [{"instruction": f"What is {i} plus {i}?", "input": "", "output": "It is " + "long " * i + "."}
            for i in range(8)]
    data, target = tmp_path / "in.jsonl", tmp_path / "target.jsonl"
    atomic_write_jsonl(rows, data)
    atomic_write_jsonl(rows[:5], target)

    def config(*more):
        return load_config(overrides=[
            "generate.taxonomy.enabled=false", "generate.text.enabled=false", f"generate.inputs=[{data}]",
            "model.model=tiny", "model.backend=hf", "score.custom=[test_plugin_passes_targets:LENGTH_GAP]",
            "score.scores=[length_gap]", f"score.target={target}",
            f"run.out_dir={tmp_path / 'runs'}", "select.steps=[{top_k: {column: score_length_gap, k: 3}}]", *more])

    return config


def test_a_scores_own_target_is_built_once_by_the_condition_stage_and_read_by_the_score(run_and_cfg):
    cfg = run_and_cfg()
    assert targets_needed(cfg) == {"mean_length"}
    run = RunFolder(cfg.run_dir())
    run.claim(cfg.fingerprint(), cfg.model_dump_json())
    BUILDS.clear()
    run_stage("collect", run, cfg)
    made = run_stage("condition", run, cfg)
    assert BUILDS == [made["target_split"]["conditioning"]] and BUILDS[0] < 5  # rows held out for train are not seen
    mean = float(np.load(run.path(made["mean_length"]))[0])
    run_stage("condition", run, cfg)
    assert len(BUILDS) == 1  # cached: the same rows, options and code
    run_stage("score", run, cfg)
    scored = pl.read_parquet(run.scored / "*.parquet")
    assert scored["score_length_gap"].to_list() == pytest.approx(
        [len(r) - mean for r in scored["response"].to_list()])

    bigger = run_and_cfg("score.options.length_gap.scale=2.0")
    run = RunFolder(bigger.run_dir())
    run.claim(bigger.fingerprint(), bigger.model_dump_json())
    run_stage("collect", run, bigger)
    made = run_stage("condition", run, bigger)
    assert len(BUILDS) == 2 and float(np.load(run.path(made["mean_length"]))[0]) == pytest.approx(2 * mean)
