"""Evaluation: SQuAD-style EM/F1 on hand-made strings, held-out loss against a direct computation,
batched greedy generation against one-at-a-time generation."""

import pytest
import torch
import torch.nn.functional as F

from pipelines.finetune.evaluate import (
    evaluate_qa,
    exact_match,
    generate_answers,
    heldout_loss,
    normalize_answer,
    qa_prompt,
    token_f1,
)
from pipelines.finetune.data import IGNORE_INDEX, encode_chat
from pipelines.llm.tiny import tiny_model, tiny_tokenizer
from pipelines.schema import make_example, to_messages, to_table


@pytest.fixture(scope="module")
def tiny():
    tok = tiny_tokenizer()
    return tiny_model(tok), tok


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


def test_heldout_loss_is_the_mean_nll_of_assistant_tokens(tiny):
    model, tok = tiny
    rows = [("What is 2+2?", "", "four"), ("Name a colour.", "Sky is blue.", "blue, the sky's colour")]
    table = to_table([make_example(i, r, context=c) for i, c, r in rows])
    total, count = 0.0, 0
    for i, c, r in rows:
        enc = encode_chat(tok, to_messages(i, c, r))
        with torch.no_grad():
            logits = model(torch.tensor([enc.input_ids])).logits[0, :-1]
        labels = torch.tensor(enc.labels[1:])
        total += F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="sum").item()
        count += int((labels != IGNORE_INDEX).sum())
    assert heldout_loss(model, tok, table, batch_size=2) == pytest.approx(total / count, rel=1e-5)


def test_batched_greedy_generation_matches_one_at_a_time(tiny):
    model, tok = tiny
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

    model, tok = tiny
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
