"""Evaluation: SQuAD-style EM/F1 on hand-made strings, held-out loss against a direct computation,
batched greedy generation against one-at-a-time generation."""

import json

import pytest
import torch
import torch.nn.functional as F

from pipelines.finetune.data import IGNORE_INDEX, encode_chat
from pipelines.finetune.evaluate import (
    evaluate_qa,
    fit_prompts,
    generate_answers,
    heldout_loss,
    load_qa_rows,
    qa_prompt,
)
from pipelines.qa_metrics import exact_match, normalize_answer, qa_fields, token_f1
from pipelines.schema import make_example, to_messages, to_table
from pipelines.shards import read_rejects


def test_normalisation_and_exact_match():
    assert normalize_answer("  The  Eiffel Tower! ") == "eiffel tower"
    assert exact_match("the Eiffel tower.", "Eiffel Tower") == 1.0
    assert exact_match("Eiffel", "Eiffel Tower") == 0.0
    assert exact_match("Paris", ["London", "paris"]) == 1.0


def test_token_f1():
    assert token_f1("Eiffel Tower", "the Eiffel Tower") == 1.0
    assert token_f1("the big red tower", "red tower") == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))
    assert token_f1("blue", "red") == 0.0
    assert token_f1("", "") == 1.0 and token_f1("a", "x") == 0.0  # "a" normalises to empty
    assert token_f1("red", ["blue", "red car"]) == pytest.approx(2 * 1 * 0.5 / 1.5)


@pytest.mark.parametrize("max_length", [512, 24])
def test_heldout_loss_is_the_mean_nll_of_assistant_tokens(tiny, max_length):
    """Also for rows over max_length: encoded as training encodes them (answer kept, prompt's tail), none dropped."""
    model, tok = tiny.pair()
    rows = [
        ("What is 2+2?", "", "four"),
        ("Name a colour.", "Sky is blue. " * 10, "blue, the sky's colour"),
        ("Say it.", "", "word " * 40),
    ]
    table = to_table([make_example(i, r, context=c) for i, c, r in rows])
    total, count = 0.0, 0
    for row in table.iter_rows(named=True):  # the stored (stripped) texts
        enc = encode_chat(tok, to_messages(row["instruction"], row["context"], row["response"]), max_length)
        with torch.no_grad():
            logits = model(torch.tensor([enc.input_ids])).logits[0, :-1]
        labels = torch.tensor(enc.labels[1:])
        total += F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="sum").item()
        count += int((labels != IGNORE_INDEX).sum())
    loss = heldout_loss(model, tok, table, batch_size=2, max_length=max_length)
    assert loss == pytest.approx(total / count, rel=1e-5)


def test_long_generation_prompts_keep_their_tail(tiny):
    model, tok = tiny.pair()
    short, long = qa_prompt("Who?", "Ann wrote it."), qa_prompt("Who wrote it?", "Ann wrote it. " * 40)
    fitted = fit_prompts(tok, [short, long], max_new_tokens=8, max_length=48)
    assert fitted[0] == short  # fits: unchanged, still messages
    full = tok.apply_chat_template(long, tokenize=False, add_generation_prompt=True)
    assert isinstance(fitted[1], str) and full.endswith(fitted[1]) and len(fitted[1]) < len(full)
    assert len(tok(fitted[1], add_special_tokens=False)["input_ids"]) <= 48 - 8
    preds = generate_answers(model, tok, [short, long], max_new_tokens=8, max_length=48)
    assert preds[0] == generate_answers(model, tok, [short], max_new_tokens=8)[0] and len(preds) == 2


def test_load_qa_rows_derives_fields_and_keeps_bad_lines_as_rejects(tmp_path, caplog):
    path = tmp_path / "qa.jsonl"
    lines = [
        json.dumps(
            {"context": "Box 1 holds 1 apple.", "question": "How many?", "answer": "1", "subset": "a"}
        ),
        "{not json",
        json.dumps({"context": "Box 2 holds 2 apples.", "question": "How many?", "answer": "2"}),
        json.dumps({"question": "No answer?"}),
    ]
    path.write_text("\n".join(lines) + "\n")
    with caplog.at_level("WARNING"):
        rows = load_qa_rows(path, rejects_path=tmp_path / "rej" / "rejects-00000.jsonl")
    assert "2 bad row(s)" in caplog.text
    assert [(r["question"], r["context"], r["answer"]) for r in rows] == [
        ("How many?", "Box 1 holds 1 apple.", "1"),
        ("How many?", "Box 2 holds 2 apples.", "2"),
    ]
    assert rows[0]["subset"] == "a"  # the file's other fields ride along
    assert sorted(r["line"] for r in read_rejects(tmp_path / "rej")) == [2, 4]
    assert len(load_qa_rows(path, limit=1)) == 1
    # Any format the reader takes: QA fields from the example table.
    (tmp_path / "ex.jsonl").write_text(
        json.dumps({"instruction": "Name a colour.", "response": "Blue."}) + "\n"
    )
    assert load_qa_rows(tmp_path / "ex.jsonl") == [
        {"question": "Name a colour.", "context": "", "answer": "Blue."}
    ]


def test_batched_greedy_generation_matches_one_at_a_time(tiny):
    model, tok = tiny.pair()
    prompts = [
        qa_prompt("Who?", "Ann wrote the letter."),
        qa_prompt("What is the capital of France?", ""),
        qa_prompt("Count:", "0 1 2 3 4 5 6 7 8 9 yes no maybe", indicator=False),
    ]
    batched = generate_answers(model, tok, prompts, max_new_tokens=6, batch_size=3)
    single = [generate_answers(model, tok, [p], max_new_tokens=6, batch_size=1)[0] for p in prompts]
    assert batched == single


def test_evaluate_qa_scores_predictions(tiny, monkeypatch):
    import pipelines.finetune.evaluate as ev

    model, tok = tiny.pair()
    monkeypatch.setattr(ev, "generate_answers", lambda m, t, prompts, **kw: ["Paris", "the cat", "nope"])
    rows = [
        {"context": "c", "question": "q", "answer": "paris"},
        {"context": "c", "question": "q", "answer": "a black cat"},
        {"context": "", "question": "q", "answer": "yes"},
    ]
    res = evaluate_qa(model, tok, rows)
    assert res["n"] == 3 and res["predictions"][0] == "Paris"
    assert res["exact_match"] == pytest.approx(1 / 3)
    assert res["f1"] == pytest.approx((1 + 2 * 0.5 * 1 / 1.5 + 0) / 3)


def test_qa_prompt_adds_indicator_only_with_context():
    assert qa_prompt("Q?", "P.", indicator=True)[0]["content"] == "Q?\n\nP. [IND]"
    assert qa_prompt("Q?", "", indicator=True)[0]["content"] == "Q?"


def test_qa_fields_reads_qa_and_example_rows():
    assert qa_fields({"question": "Q?", "answer": "A", "context": None}) == ("Q?", "", "A")
    assert qa_fields({"instruction": "I", "context": "C", "response": "R"}) == ("I", "C", "R")


def test_evaluate_run_merges_the_extra_eval_hook(tiny, monkeypatch):
    """A method's evaluation comes in from the caller: it gets the QA rows and the generation
    settings, and its metrics are merged; without a hook nothing extra is computed."""
    import pipelines.finetune.evaluate as ev

    model, tok = tiny.pair()
    monkeypatch.setattr(ev, "generate_answers", lambda m, t, prompts, **kw: ["x"] * len(prompts))
    rows = [{"context": "", "question": f"q{i}", "answer": "a", "source": "context_qa"} for i in range(2)]
    seen = {}

    def hook(model_, tokenizer, qa_rows, *, max_new_tokens, batch_size):
        seen.update(rows=len(qa_rows), max_new_tokens=max_new_tokens, batch_size=batch_size, model=model_)
        return {"mine_score": 0.25}

    m = ev.evaluate_run(model, tok, rows, max_new_tokens=3, batch_size=2, extra_eval=hook)
    assert m["mine_score"] == 0.25 and seen == {"rows": 2, "max_new_tokens": 3, "batch_size": 2, "model": model}
    assert "mine_score" not in ev.evaluate_run(model, tok, rows, max_new_tokens=3, batch_size=2)
