"""Saved runs: train + save + evaluate on the tiny model, reload, same held-out loss; the CLI end to end."""

import json

import pytest

from pipelines.finetune import load_run, run_training
from pipelines.finetune.__main__ import main
from pipelines.finetune.data import load_examples
from pipelines.finetune.evaluate import heldout_loss


@pytest.fixture
def qa_files(tmp_path):
    rows = [
        {
            "context": f"Box {i} holds {i} apples.",
            "question": f"How many apples in box {i}?",
            "answer": str(i),
        }
        for i in range(12)
    ]
    train, held = tmp_path / "train.jsonl", tmp_path / "held.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows[:8]))
    held.write_text("".join(json.dumps(r) + "\n" for r in rows[8:]))
    return train, held


@pytest.mark.parametrize(("method", "indicator"), [("lora", True), ("full", False), ("mezo", False)])
def test_saved_run_reloads_with_the_same_eval_loss(tmp_path, qa_files, method, indicator):
    train, held = qa_files
    out = tmp_path / method
    metrics = run_training(
        train,
        out,
        method=method,
        model="tiny",
        eval_path=held,
        max_steps=2,
        batch_size=4,
        learning_rate=1e-2 if method != "mezo" else 1e-3,
        conditional_indicator=indicator,
        eval_before=True,
        max_new_tokens=3,
        device="cpu",
    )
    assert (out / "run_settings.json").exists() and (out / "metrics.json").exists()
    assert (out / ("adapter_model.safetensors" if method == "lora" else "model.safetensors")).exists()
    assert json.loads((out / "metrics.json").read_text())["eval_loss"] == pytest.approx(metrics["eval_loss"])
    # Training did something, and metrics.json holds what was returned.
    assert metrics["eval_loss"] != pytest.approx(metrics["eval_loss_before"], abs=1e-6)
    assert 0.0 <= metrics["f1"] <= 1.0 and metrics["qa_rows"] == 4
    assert ("f1_ind" in metrics) is indicator
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 4

    model, tok = load_run(out, device="cpu")
    assert ("[IND]" in tok.get_vocab()) is indicator
    again = heldout_loss(model, tok, load_examples(held), conditional_indicator=indicator)
    assert again == pytest.approx(metrics["eval_loss"], rel=1e-5)


def test_cli_trains_evaluates_and_says_where(tmp_path, qa_files, capsys):
    train, held = qa_files
    with train.open("a") as f:  # a bad line is a counted reject beside the run, not a failure
        f.write('{"question": "cut off\n')
    out = tmp_path / "cli"
    metrics = main(
        [
            "--selection",
            str(train),
            "--eval",
            str(held),
            "--model",
            "tiny",
            "--method",
            "hft",
            "--out",
            str(out),
            "--max-steps",
            "1",
            "--batch-size",
            "4",
            "--max-new-tokens",
            "2",
        ]
    )
    assert f"saved run to {out}" in capsys.readouterr().out
    assert metrics["method"] == "hft" and metrics["steps"] == 1
    assert (metrics["train_rejects"], metrics["eval_rejects"], metrics["rows"]) == (1, 0, 8)
    (reject,) = [json.loads(line) for line in (out / "rejects-train.jsonl").read_text().splitlines()]
    assert reject["line"] == 9 and reject["file"] == train.name  # outside the working directory: its name only
    assert not (out / "rejects-eval.jsonl").exists()
    assert json.loads((out / "run_settings.json").read_text())["base_model"] == "tiny"


def test_load_run_rejects_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a saved fine-tuning run"):
        load_run(tmp_path)
