"""A user's own score, row filter and generator, defined in this file and named by import path:
a full flow run on the tiny model uses them with no edit to the package."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from instruct_selectors.scores.base import Score

from flows.config import ConfigError, load_config
from pipelines.shards import atomic_write_jsonl

REPO = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent


def _word_count(inputs):
    """A model-free score: words in the response (a stand-in for a classifier)."""
    return np.array([len(r.split()) for r in inputs.table["response"]], dtype=float)


WORDS = Score(name="words", column="score_words", compute=_word_count,
              definition="words in the response (a user's score from tests/test_plugins.py)")


def _loss_gap(inputs):
    """A score on the shared passes: the response's loss alone minus after the prompt."""
    return inputs.passes["prior/alone"]["loss"] - inputs.passes["prior/full"]["loss"]


GAP = Score(name="gap", column="score_gap", compute=_loss_gap, passes=("prior/full", "prior/alone"),
            definition="response loss alone minus with the prompt")


def no_item_three(row):
    """A row filter: drops the rows about item 3, with a reason."""
    return "item 3 " not in row["instruction"] + " ", "mentions item 3"


class Echo:
    """A generator: one row per configured word, answered by the model."""

    name = "echo"

    def generate(self, llm, options, seed):
        for word in options.get("words", []):
            yield {"instruction": f"Repeat the word {word}.", "response": f"{word} {word}"}
        yield {"instruction": "", "response": "no instruction: a reject"}


ECHO = Echo()


def _rows(n):
    return [{"instruction": f"Question {i}: what does item {i} cost?", "input": "",
             "output": f"It costs {i % 7 + 1} dollars." + " Really." * (i % 3)} for i in range(n)]


@pytest.mark.slow
def test_custom_score_filter_and_generator_in_a_full_flow(tmp_path):
    data = tmp_path / "input.jsonl"
    atomic_write_jsonl(_rows(10), data)
    env = dict(os.environ, PREFECT_HOME=str(tmp_path / "prefect"), HF_HUB_OFFLINE="1",
               PREFECT_LOGGING_LEVEL="WARNING", PYTHONPATH=str(HERE))
    args = ["--no-taxonomy", "--no-text", "--model", "tiny", "--backend", "hf", "--input", str(data),
            "--out-dir", str(tmp_path / "runs"), "--run-name", "plug", "--scores", "ifd,words,gap",
            "--set", "score.custom=[test_plugins:WORDS, test_plugins:GAP]",
            "--set", "select.custom=[test_plugins:no_item_three]",
            "--set", "generate.custom=[test_plugins:ECHO]", "--set", "generate.options={echo: {words: [apple, pear]}}",
            "--set", "select.steps=[{top_k: {column: score_words, fraction: 0.5}}]"]
    res = subprocess.run([sys.executable, "-m", "flows.build_dataset", *args], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    run = tmp_path / "runs" / "plug"
    scored = pl.read_parquet(run / "scored" / "part-*.parquet")
    assert {"score_words", "score_gap", "score_ifd"} <= set(scored.columns)
    assert scored["score_words"].to_list() == [float(len(r.split())) for r in scored["response"]]
    assert scored["score_gap"].null_count() == 0
    # the generator's rows were collected (and its bad row kept as a reject)
    assert scored.filter(pl.col("source") == "generate_custom:echo").height == 2
    assert json.loads((run / "generate_custom" / "echo" / "counts.json").read_text()) == {"examples": 2, "rejects": 1}
    selected = pl.read_parquet(run / "selected" / "all.parquet")
    dropped = selected.filter(pl.col("instruction").str.contains("item 3 "))
    assert dropped["dropped_by"].to_list() == ["no_item_three: mentions item 3"]
    kept = selected.filter(pl.col("keep"))
    assert kept["score_words"].min() >= selected.filter(pl.col("dropped_by").str.starts_with("top_k"))["score_words"].max()
    report = (run / "report.md").read_text()
    card = (run / "dataset" / "README.md").read_text()
    for text in (report, card):
        assert "score_words" in text
    assert "words in the response" in card and "no_item_three" in report
    assert "echo (generate_custom)" in card


def test_bad_plugin_paths_are_clear_config_errors():
    with pytest.raises(ConfigError, match="cannot import 'no_such_pkg.scores'"):
        load_config(overrides=["score.custom=[no_such_pkg.scores:X]"])
    with pytest.raises(ConfigError, match="unknown score"):
        load_config(overrides=["score.scores=[toxicity]"])
    with pytest.raises(ConfigError, match="not a Score"):
        load_config(overrides=["score.custom=[json:dumps]"])


def test_a_step_on_a_custom_score_needs_it_computed(monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))
    cfg = load_config(overrides=["score.custom=[test_plugins:WORDS]", "score.scores=[words]",
                                 "select.steps=[{top_k: {column: score_words, k: 2}}]"])
    assert cfg.score.specs()[0].column == "score_words"
    with pytest.raises(ConfigError, match="score_words"):
        load_config(overrides=["score.custom=[test_plugins:WORDS]", "score.scores=[ifd]",
                               "select.steps=[{top_k: {column: score_words, k: 2}}]"])
