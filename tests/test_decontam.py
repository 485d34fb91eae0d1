"""Decontamination: 13-gram overlap with eval sets, the decontaminate step and the select stage."""

from __future__ import annotations

import polars as pl
import pytest
from instruct_selectors.decontam import COLUMN, build_index, mark, ngram_hashes, overlaps, words
from instruct_selectors.policies import select

from flows.config import ConfigError, load_config
from flows.pipeline import run_stage
from flows.run_folder import RunFolder
from pipelines.schema import make_example, to_table
from pipelines.shards import atomic_write_jsonl, atomic_write_parquet, shard_path

EVAL = ("Explain why the sky appears blue during the day but red and orange at sunset, "
        "using the idea of Rayleigh scattering of sunlight by molecules in the air.")
PARAPHRASE = ("Why is the daytime sky blue while sunsets look red or orange? Use Rayleigh scattering "
              "of light by air molecules in your explanation.")


def _table(texts: list[str]) -> pl.DataFrame:
    return to_table([make_example(t, f"answer {i}", source="test") for i, t in enumerate(texts)])


def _index(n: int = 13):
    return build_index({"evals.jsonl": _table([EVAL])}, n=n)


def test_an_eval_row_pasted_into_a_longer_instruction_is_caught():
    pasted = f"Homework for week 3. {EVAL.upper()} Write at least two paragraphs, and cite a source."
    marked = mark(_table([pasted, "What is the capital of France?"]), _index())
    first, second = marked[COLUMN].to_list()
    assert first.startswith("evals.jsonl:") and int(first.split(":")[1]) >= 10
    assert second is None


def test_paraphrases_without_a_shared_13_gram_are_not_caught():
    assert mark(_table([PARAPHRASE]), _index())[COLUMN].to_list() == [None]


def test_case_punctuation_and_whitespace_are_normalised():
    noisy = EVAL.replace(" ", "  \n").replace(",", " ;").replace("Rayleigh", "RAYLEIGH")
    assert words(noisy) == words(EVAL)
    assert mark(_table([noisy]), _index())[COLUMN].to_list()[0] is not None
    assert np_equal(ngram_hashes(noisy, 13), ngram_hashes(EVAL, 13))


def np_equal(a, b) -> bool:
    return a.shape == b.shape and bool((a == b).all())


def test_n_is_configurable_and_short_texts_have_no_ngrams():
    shared_4 = "scattering of sunlight by molecules"  # 5 words of the eval row, no 13-gram
    assert mark(_table([shared_4]), _index(13))[COLUMN].to_list() == [None]
    assert mark(_table([shared_4]), _index(4))[COLUMN].to_list()[0] == "evals.jsonl:2"
    assert ngram_hashes("too short", 3).size == 0
    with pytest.raises(ValueError, match="n must be"):
        build_index({}, n=0)


def test_contaminated_by_names_every_eval_set_most_first():
    index = build_index({"a.jsonl": _table([EVAL]), "b.json": _table([EVAL[:90]])}, n=5)
    (label,) = mark(_table([EVAL]), index)[COLUMN].to_list()
    assert label.split(", ")[0].startswith("a.jsonl:") and label.split(", ")[1].startswith("b.json:")


def test_overlaps_in_row_chunks_match_one_pass():
    texts = [f"Row {i}. {EVAL[: 40 + 7 * i]} and more words {i}" for i in range(11)] + ["clean", EVAL]
    index, table = _index(5), _table(texts)
    whole = overlaps(table, index, chunk_rows=len(texts))["evals.jsonl"]
    assert whole.sum() > 0 and whole.size == len(texts)
    for chunk in (1, 3, 5):
        assert overlaps(table, index, chunk_rows=chunk)["evals.jsonl"].tolist() == whole.tolist()


def test_the_decontaminate_step_drops_marked_rows_first():
    table = mark(_table([EVAL, "A clean question about tides?", EVAL + " Please answer briefly."]), _index())
    selected, summary = select(table, [{"decontaminate": {}}, {"dedup": {"near": False}}])
    assert selected["keep"].to_list() == [False, True, False]
    assert selected["dropped_by"].to_list() == ["decontaminate", None, "decontaminate"]
    assert summary.row(0, named=True)["dropped"] == 2
    with pytest.raises(ValueError, match="contaminated_by"):
        select(_table([EVAL]), [{"decontaminate": {}}])


def test_select_stage_marks_shards_counts_and_drops(tmp_path):
    evals = tmp_path / "alpaca_eval.jsonl"
    atomic_write_jsonl([{"instruction": EVAL, "output": "Because of scattering."}], evals)
    cfg = load_config(overrides=[
        "generate.taxonomy.enabled=false", "generate.text.enabled=false", "model.model=tiny",
        "score.scores=[ifd]", f"run.out_dir={tmp_path / 'runs'}", f"select.decontaminate.against=[{evals}]",
        "select.steps=[{top_k: {column: score_ifd, fraction: 1.0}}]",
    ])
    assert cfg.select.steps_to_run()[0].spec() == {"decontaminate": {}}
    run = RunFolder(cfg.run_dir())
    rows = [f"Question {i}: what does the passage say about topic {i}?" for i in range(5)]
    rows[3] = f"Read this and answer. {EVAL}"
    table = _table(rows).with_columns(pl.Series("score_ifd", [0.5] * 5))
    atomic_write_parquet(table.head(3), shard_path(run.scored, 0))
    atomic_write_parquet(table.tail(2), shard_path(run.scored, 1))
    record = run_stage("select", run, cfg)
    d = record["decontamination"]
    assert d["rows"] == 1 and d["per_eval_set"] == {"alpaca_eval.jsonl": 1} and d["n"] == 13
    assert record["rows_out"] == 4 and record["steps"][0]["name"] == "decontaminate"
    selected = pl.read_parquet(run.selected)
    assert selected.filter(pl.col("dropped_by") == "decontaminate")["instruction"].to_list() == [rows[3]]


def test_a_decontaminate_step_without_eval_sets_is_a_config_error():
    with pytest.raises(ConfigError, match="select.decontaminate.against"):
        load_config(overrides=["select.steps=[{decontaminate: {}}]"])
