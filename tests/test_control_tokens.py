"""Conditional training with control tokens: labels by threshold, tokens added once, prompts tagged,
saved runs reload with the tokens, and the flow's train stage end to end on the tiny model."""

from __future__ import annotations

import json

import polars as pl
import pytest

from flows.config import ConfigError, load_config
from flows.pipeline import run_stage
from flows.run_folder import RunFolder
from pipelines.finetune import load_run, run_training
from pipelines.finetune.control import (
    BAD,
    CONTROL_TAG,
    CONTROL_TOKENS,
    GOOD,
    GOOD_TAG,
    LABEL_COLUMN,
    control_labels,
    control_rows,
    prompt_good,
)
from pipelines.finetune.data import INDICATOR, chat_rows, encode_chat, ensure_indicator_token, load_examples
from pipelines.finetune.evaluate import heldout_loss, qa_prompt
from pipelines.finetune.prompt_tags import ensure_tokens
from pipelines.schema import make_example, to_table
from pipelines.shards import atomic_write_jsonl


def _scored(scores):
    rows = [make_example(f"Q{i}?", f"A{i}.", context=f"P{i}.") for i in range(len(scores))]
    return to_table(rows).with_columns(pl.Series("score_x", scores, dtype=pl.Float64))


# --------------------------------------------------------------------------- tokens
def test_tokens_are_added_once_and_embeddings_resized_once(tiny):
    model, tok = tiny.pair()
    before = len(tok)
    resizes = []
    real = model.resize_token_embeddings
    model.resize_token_embeddings = lambda *a, **k: resizes.append(a) or real(*a, **k)
    ids = ensure_tokens(tok, CONTROL_TOKENS, model)
    assert ids == [before, before + 1] and len(tok) == before + 2
    assert model.get_input_embeddings().weight.shape[0] == before + 2 == model.config.vocab_size
    assert ensure_tokens(tok, CONTROL_TOKENS, model) == ids  # second call: nothing added
    assert len(tok) == before + 2 and len(resizes) == 1
    # Special: never split, and the tokenizer keeps them whole inside text.
    assert tok(f"{GOOD} hi", add_special_tokens=False)["input_ids"][0] == ids[0]
    assert set(CONTROL_TOKENS) <= set(tok.all_special_tokens) | set(tok.get_added_vocab())
    # [IND] goes through the same function: one more row, still idempotent.
    ind = ensure_indicator_token(tok, model)
    assert ind == before + 2 and ensure_indicator_token(tok, model) == ind and len(resizes) == 2


# --------------------------------------------------------------------------- labels
@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"threshold": 3.0}, [BAD, GOOD, GOOD, BAD, BAD]),  # >= threshold; null and NaN are bad
        ({"threshold": 3.0, "largest": False}, [GOOD, GOOD, BAD, BAD, BAD]),  # lower is better
        ({"quantile": 0.5}, [BAD, GOOD, GOOD, BAD, BAD]),  # median of the real scores 1, 3, 5 is 3
        ({"quantile": 0.5, "largest": False}, [GOOD, GOOD, BAD, BAD, BAD]),
    ],
)
def test_label_by_value_and_quantile(kwargs, expected):
    table = _scored([1.0, 3.0, 5.0, None, float("nan")])
    assert control_labels(table, "score_x", **kwargs).to_list() == expected


def test_quantile_is_taken_over_the_scores():
    table = _scored([float(i) for i in range(10)])
    labels = control_labels(table, "score_x", quantile=0.8).to_list()
    assert labels == [BAD] * 8 + [GOOD] * 2  # q0.8 of 0..9 is 7.2: only 8 and 9 pass
    with pytest.raises(ValueError, match="exactly one of"):
        control_labels(table, "score_x", threshold=1, quantile=0.5)
    with pytest.raises(ValueError, match="'score_y' is not in the table"):
        control_labels(table, "score_y", threshold=1)


def test_rows_above_and_below_get_their_token_at_the_start_of_the_prompt(tiny):
    tok = tiny.tokenizer()
    good_id, bad_id = ensure_tokens(tok, CONTROL_TOKENS)
    table = _scored([0.9, 0.1]).with_columns(control_labels(_scored([0.9, 0.1]), "score_x", threshold=0.5))
    above, below = chat_rows(table, tags=[CONTROL_TAG])
    assert above[-2]["content"] == f"{GOOD} Q0?\n\nP0." and below[-2]["content"] == f"{BAD} Q1?\n\nP1."
    ids = encode_chat(tok, above).input_ids
    assert ids.count(good_id) == 1 and bad_id not in ids
    # right after the user header: <|im_start|>user\n<|good|>
    header = tok("<|im_start|>user\n", add_special_tokens=False)["input_ids"]
    at = ids.index(good_id)
    assert ids[at - len(header) : at] == header
    # Both tags at once: the control token first, [IND] last, in the same user message.
    ctx = table.with_columns(pl.Series("ctx_dependent", [True, False]))
    both = chat_rows(ctx, conditional_indicator=True, tags=[CONTROL_TAG])[0][-2]["content"]
    assert both.startswith(GOOD + " ") and both.endswith(" " + INDICATOR)


def test_a_row_without_a_label_is_an_error_naming_it():
    table = _scored([1.0])
    with pytest.raises(ValueError, match=rf"row {table['id'][0]}: field 'control_token'"):
        chat_rows(table, tags=[CONTROL_TAG])


def test_inference_prompt_starts_with_good_once():
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "Q?"}]
    assert prompt_good(msgs)[1]["content"] == f"{GOOD} Q?" and msgs[1]["content"] == "Q?"
    assert prompt_good(prompt_good(msgs)) == prompt_good(msgs)
    assert qa_prompt("Q?", "P.", indicator=True, good=True)[0]["content"] == f"{GOOD} Q?\n\nP. {INDICATOR}"
    # evaluation rows carry no label: GOOD_TAG asks every row with <|good|>
    (row,) = chat_rows(_scored([0.0]), tags=[GOOD_TAG])
    assert row[-2]["content"].startswith(GOOD + " ")


def test_control_rows_keep_dropped_rows_but_not_duplicates_or_the_test_split():
    table = _scored([5.0, 4.0, 3.0, 2.0, 1.0]).with_columns(
        pl.Series("keep", [True, True, False, False, False]),
        pl.Series("dropped_by", [None, None, "top_k(score_x)", "dedup.near", "top_k(score_x)"]),
    )
    held = [table["id"][1]]
    rows, counts = control_rows(table, "score_x", quantile=0.5, held_out_ids=held)
    assert rows["id"].to_list() == [table["id"][i] for i in (0, 2, 4)]
    assert "keep" not in rows.columns and rows["selected"].to_list() == [True, False, False]
    assert rows[LABEL_COLUMN].to_list() == [GOOD, GOOD, BAD]  # median of 5, 3, 1 is 3
    assert counts | {"threshold": 0} == {
        "rows_in": 5,
        "duplicates": 1,
        "held_out": 1,
        "rows": 3,
        "good": 2,
        "bad": 1,
        "null_scores": 0,
        "selected_good": 1,
        "selected_bad": 0,
        "threshold": 0,
    }


# --------------------------------------------------------------------------- saved runs
@pytest.fixture
def labelled_files(tmp_path):
    rows = [
        make_example(f"How many apples in box {i}?", str(i), context=f"Box {i} holds {i} apples.")
        for i in range(10)
    ]
    table = to_table(rows).with_columns(pl.Series("score_x", [float(i) for i in range(10)]))
    table = table.with_columns(control_labels(table, "score_x", quantile=0.5))
    train = tmp_path / "train.parquet"
    table.head(8).write_parquet(train)
    held = tmp_path / "held.jsonl"
    atomic_write_jsonl(
        [
            {"context": r["context"], "question": r["instruction"], "answer": r["response"]}
            for r in table.tail(2).iter_rows(named=True)
        ],
        held,
    )
    return train, held


@pytest.mark.parametrize("method", ["lora", "full"])
def test_saved_run_reloads_with_the_control_tokens(tmp_path, labelled_files, method):
    train, held = labelled_files
    out = tmp_path / method
    metrics = run_training(
        train,
        out,
        method=method,
        model="tiny",
        eval_path=held,
        max_steps=2,
        batch_size=4,
        learning_rate=1e-2,
        control_tokens=True,
        eval_before=True,
        max_new_tokens=2,
        device="cpu",
    )
    # scores 0..9, median 4.5: of the first 8 rows 5, 6, 7 are good; labels survive the file round trip
    assert metrics["control_tokens"] == {GOOD: 3, BAD: 5, "cut": 0}
    assert metrics["eval_loss"] != pytest.approx(metrics["eval_loss_before"], abs=1e-6)
    model, tok = load_run(out, device="cpu")
    assert set(CONTROL_TOKENS) <= set(tok.get_vocab())
    assert model.get_input_embeddings().weight.shape[0] == len(tok) == model.config.vocab_size
    assert model.get_output_embeddings().weight.shape[0] == len(tok)
    # Same model back: the held-out loss asked with <|good|> is what the run reported.
    again = heldout_loss(model, tok, load_examples(held), control_tokens=True)
    assert again == pytest.approx(metrics["eval_loss"], rel=1e-5)
    assert again != pytest.approx(heldout_loss(model, tok, load_examples(held)), abs=1e-6)


# --------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.control_tokens={column: score_judge, threshold: 4}"], "does not include 'judge'"),
        (["train.control_tokens={column: keep, threshold: 1}"], "is not a score column"),
        (["train.control_tokens={column: score_ifd, threshold: 1, quantile: 0.5}"], "exactly one of"),
        (["train.control_tokens={column: score_ifd}"], "exactly one of"),
        (["train.control_tokens={column: score_ifd, quantile: 2}"], "quantile"),
    ],
)
def test_config_checks_the_control_column(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=overrides)
    assert message in str(err.value)


def test_config_default_is_off_and_a_computed_score_is_accepted():
    assert load_config().train.control_tokens is None
    cfg = load_config(overrides=["train.control_tokens={column: score_ifd, quantile: 0.5, largest: false}"])
    assert cfg.train.control_tokens.column == "score_ifd" and cfg.train.control_tokens.largest is False


# --------------------------------------------------------------------------- the flow's train stage
def test_train_stage_with_control_tokens_trains_on_every_selected_row(tmp_path):
    rows = [
        {
            "instruction": f"What is {i} plus {i}?",
            "input": f"Numbers: {i}." if i % 2 else "",
            "output": f"It is {2 * i}.",
        }
        for i in range(10)
    ]
    rows.append(dict(rows[3]))  # an exact duplicate: dedup drops it, and so does conditioning
    data, target = tmp_path / "in.jsonl", tmp_path / "target.jsonl"
    atomic_write_jsonl(rows, data)
    atomic_write_jsonl([{"context": "Box 3 holds 3 apples.", "question": "How many?", "answer": "3"}], target)
    cfg = load_config(
        overrides=[
            "generate.taxonomy.enabled=false",
            "generate.text.enabled=false",
            f"generate.inputs=[{data}]",
            "model.model=tiny",
            "model.backend=hf",
            "score.scores=[ifd]",
            "run.shard_size=8",
            f"run.out_dir={tmp_path / 'runs'}",
            f"train.eval_path={target}",
            "select.steps=[{dedup: {near: false}}, {top_k: {column: score_ifd, fraction: 0.3}}]",
            "export.test_fraction=0.2",
            "train.method=lora",
            "train.max_steps=2",
            "train.control_tokens={column: score_ifd, quantile: 0.5, largest: false}",
        ]
    )
    run = RunFolder(cfg.run_dir())
    run.claim(cfg.fingerprint(), cfg.model_dump_json())
    run_stage("collect", run, cfg)
    run_stage("score", run, cfg)
    run_stage("select", run, cfg)
    exported = run_stage("export", run, cfg)
    assert exported["rows_out"] == 3  # 10 unique rows, top 30%: the selection alone trains on 3

    record = run_stage("train", run, cfg)
    control = record["control_rows"]
    # 11 rows: 1 duplicate out, the export's test split (round(0.2 * 3) = 1 row) out, 9 train
    assert (control["rows_in"], control["duplicates"], control["held_out"], control["rows"]) == (11, 1, 1, 9)
    assert record["metrics"]["rows"] == 9 and control["selected_good"] + control["selected_bad"] == 2
    assert record["metrics"]["control_tokens"] == {GOOD: control["good"], BAD: control["bad"], "cut": 0}
    assert control["good"] >= 1 and control["bad"] >= 1
    test_ids = set(pl.read_parquet(run.path(exported["outputs"]["test_parquet"]))["id"])
    trained = pl.read_parquet(run.control_rows)
    assert not test_ids & set(trained["id"]) and trained.height == 9
    arm = run.train_arm("selected")  # the only arm: there is no selection to compare with random
    saved = json.loads((arm / "run_settings.json").read_text())
    assert saved["control_tokens"] is True and set(CONTROL_TOKENS) <= set(load_run(arm)[1].get_vocab())
    assert "eval_loss" in record["metrics"] and (arm / "predictions.jsonl").exists()
    assert set(record["arms"]) == {"selected"} and "train.compare skipped" in record["notes"][0]


def test_command_lines_label_a_selection_and_train_on_it(tmp_path, labelled_files, capsys):
    from pipelines.finetune.__main__ import main as finetune_main
    from pipelines.finetune.control import main as label_main

    train, held = labelled_files
    selected = (
        pl.read_parquet(train)
        .drop(LABEL_COLUMN)
        .with_columns(
            pl.Series("keep", [True] * 2 + [False] * 6), pl.Series("dropped_by", [None] * 2 + ["top_k"] * 6)
        )
    )
    selected.write_parquet(tmp_path / "all.parquet")
    counts = label_main(
        [
            str(tmp_path / "all.parquet"),
            str(tmp_path / "labelled.parquet"),
            "--column",
            "score_x",
            "--threshold",
            "2",
            "--smaller-is-better",
        ]
    )
    assert (counts["good"], counts["bad"], counts["rows"]) == (3, 5, 8)  # scores 0, 1, 2 are <= 2
    metrics = finetune_main(
        [
            "--selection",
            str(tmp_path / "labelled.parquet"),
            "--eval",
            str(held),
            "--model",
            "tiny",
            "--method",
            "full",
            "--out",
            str(tmp_path / "run"),
            "--max-steps",
            "1",
            "--batch-size",
            "4",
            "--max-new-tokens",
            "1",
            "--control-tokens",
        ]
    )
    assert metrics["rows"] == 8 and metrics["control_tokens"] == {GOOD: 3, BAD: 5, "cut": 0}
    assert "saved run to" in capsys.readouterr().out


def test_a_long_prompt_keeps_its_control_token_when_truncated(tiny):
    from pipelines.finetune.evaluate import fit_prompts
    from pipelines.finetune.prompt_tags import restore_cut_tokens

    assert restore_cut_tokens([7, 1, 2, 3, 4], [3, 4], {7}) == ([7, 4], 1)
    assert restore_cut_tokens([7, 1, 2, 3, 4], [4], {7}) == ([4], 0)  # the token next to the answer stays
    assert restore_cut_tokens([1, 2, 3], [2, 3], {7}) == ([2, 3], 0)

    tok = tiny.tokenizer()
    good_id, _ = ensure_tokens(tok, CONTROL_TOKENS)
    long = make_example("Count: " + "1 2 3 4 5 6 7 8 9 " * 20, "yes")
    table = to_table([long]).with_columns(pl.Series(LABEL_COLUMN, [GOOD]))
    (messages,) = chat_rows(table, tags=[CONTROL_TAG])
    plain = encode_chat(tok, messages, max_length=40)
    kept = encode_chat(tok, messages, max_length=40, keep_ids={good_id})
    assert plain.truncated and good_id not in plain.input_ids  # the prompt's tail alone loses the prefix
    assert kept.input_ids[0] == good_id and kept.labels[0] == -100 and len(kept.input_ids) == 40
    assert kept.input_ids[1:] == plain.input_ids[1:] and kept.labels[1:] == plain.labels[1:]
    # Generation prompts are cut the same way and keep <|good|> too.
    (cut,) = fit_prompts(tok, [qa_prompt("Count: " + "1 2 3 " * 40, "", good=True)], 4, 40)
    assert isinstance(cut, str) and cut.startswith(GOOD)
