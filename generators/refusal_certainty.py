"""R-Tuning's certainty suffix (Zhang et al. 2023, "R-Tuning: Teaching Large Language Models to
Refuse Unknown Questions"): the strings, the correctness judge, and the evaluation of a model
trained with them.

A row the model already answers correctly (its greedy answer matches the reference) keeps its
answer followed by the paper's question and "I am sure"; a row it gets wrong gets "I am unsure":

    with_certainty("Paris", known=True)
    # -> "Paris\\n\\nAre you sure you accurately answered the question based on your internal
    #     knowledge? I am sure."
    is_correct("the Paris.", "Paris", metric="exact")          # -> True (SQuAD normalisation)
    is_correct("in Paris France", "Paris", "f1", threshold=0.5) # -> True (token F1 = 0.5)

The transform that writes these rows is ``generators/refusal.py`` (stage ``refusal_aware``); this
module is the method's side that the transform, the evaluation and the benchmark share.
:func:`evaluate_certainty` measures a trained model on held-out QA through any backend: it asks
the question (greedy), keeps the answer up to the certainty question, then asks the certainty
question itself (the paper's way: the answer is fed back and followed by the question) and reads
which continuation, " I am sure." or " I am unsure.", the model finds likelier;
:func:`evaluate_refusal` does it on an in-memory model, and :func:`refusal_eval` hands it to the
fine-tuning evaluation as its ``extra_eval`` hook (``run_training(..., extra_eval=refusal_eval(...))``:
refusal_answered_accuracy, refusal_unsure_share, refusal_accuracy in the run's metrics).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from pipelines.llm.base import LLM, LossRequest, Sampling
from pipelines.qa_metrics import exact_match, qa_fields, token_f1
from pipelines.schema import user_content

CERTAINTY_QUESTION = "Are you sure you accurately answered the question based on your internal knowledge?"
SURE, UNSURE = "I am sure.", "I am unsure."
METRICS = ("f1", "exact")


# --------------------------------------------------------------------------- the suffix
def with_certainty(response: str, known: bool) -> str:
    """``response`` followed by the certainty question and the row's answer to it."""
    return f"{response.rstrip()}\n\n{CERTAINTY_QUESTION} {SURE if known else UNSURE}"


def split_certainty(text: str) -> tuple[str, bool | None]:
    """A generation cut where the model starts the certainty question: ``(answer, unsure)``.

    A model trained on the suffix writes a blank line and then the question (or, half-trained,
    something else: "yes\n\nWhat is your answer?") after its answer, often cut short by the
    token limit ("yes\n\nAre you sure you accur"). The answer ends at the first blank line --
    the suffix's separator; R-Tuning is for short QA answers -- or where "Are you sure" or any
    leading part of the question starts. ``unsure`` is True when the text after the whole
    question says "I am unsure", False for "I am sure", otherwise None.
    """
    head, found, tail = text.partition(CERTAINTY_QUESTION)
    head = _cut_question_start(head.strip().split("\n\n")[0])
    if not found:
        return head.strip(), None
    tail = tail.strip().lower()
    if tail.startswith("i am unsure") or tail.startswith("i'm unsure"):
        return head.strip(), True
    if tail.startswith("i am sure") or tail.startswith("i'm sure"):
        return head.strip(), False
    return head.strip(), None


def _cut_question_start(text: str) -> str:
    start = text.find(CERTAINTY_QUESTION[: len("Are you sure")])
    if start >= 0:
        return text[:start]
    end = text.rstrip()
    for k in range(len(CERTAINTY_QUESTION) - 1, len("Are") - 1, -1):  # the question's start, cut off
        before = end[:-k]
        if end.endswith(CERTAINTY_QUESTION[:k]) and (not before or before[-1].isspace()):
            return before
    return text


# --------------------------------------------------------------------------- correctness
def score_answer(prediction: str, reference: str | Sequence[str], metric: str) -> float:
    """Exact match (0/1) or token F1 of ``prediction`` against the reference(s), SQuAD-normalised."""
    if metric == "exact":
        return exact_match(prediction, reference)
    if metric == "f1":
        return token_f1(prediction, reference)
    raise ValueError(f"unknown metric {metric!r}: use one of {METRICS}")


def is_correct(prediction: str, reference: str | Sequence[str], metric: str = "f1", threshold: float = 0.5) -> bool:
    """Whether ``prediction`` counts as the reference answer: its score (exact or token F1) >= ``threshold``.

    With ``metric="exact"`` any threshold in (0, 1] means an exact match after normalisation."""
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    return score_answer(prediction, reference, metric) >= threshold


def question_prompt(instruction: str, context: str = "") -> list[dict[str, str]]:
    """The user turn a row's question is asked with: the same shape the row trains with."""
    return [{"role": "user", "content": user_content(instruction, context or "")}]


# --------------------------------------------------------------------------- evaluation
def certainty_prompt(tokenizer_render, prompt: list[dict[str, str]], answer: str) -> str:
    """The rendered text up to the certainty question, after ``answer``: what the suffix follows."""
    return f"{tokenizer_render(prompt)}{answer.rstrip()}\n\n{CERTAINTY_QUESTION}"


def evaluate_certainty(
    llm: LLM,
    rows: Sequence[Mapping[str, Any]],
    render,
    *,
    metric: str = "f1",
    threshold: float = 0.5,
    max_tokens: int = 64,
) -> dict[str, Any]:
    """Ask each held-out question, then ask whether the model is sure of its answer.

    ``rows``: dicts with question/context/answer (or instruction/context/response). ``render``:
    chat messages -> the prompt text with the assistant header (the backend's chat template), so
    the certainty question can be appended to the model's own answer.

    1. greedy answer (cut at the certainty question if the model goes on to write it);
    2. correct = :func:`is_correct` (``metric``, ``threshold``) against the reference;
    3. unsure = NLL(" I am unsure." | prompt, answer, question) < NLL(" I am sure." | same);
       ties count as sure. ``confidence`` = P(sure) / (P(sure) + P(unsure)) from the same two
       losses, and ``average_precision`` ranks the rows by it against their correctness (the
       paper's threshold-free AP; None unless both correct and wrong rows exist).

    Returns ``answered_accuracy`` (correct among rows not unsure; None when every row is unsure),
    ``unsure_share``, ``accuracy`` (all rows, an unsure answer judged like any other),
    ``unsure_accuracy`` (correct among the unsure rows, None when none), ``average_precision``,
    ``written_unsure`` (rows
    whose generated text itself said "I am unsure"), ``n`` and the per-row ``predictions``.
    """
    fields = [qa_fields(r) for r in rows]
    prompts = [question_prompt(q, c) for q, c, _ in fields]
    texts = llm.generate(prompts, Sampling(temperature=0.0, max_tokens=max_tokens))
    answers, written = zip(*(split_certainty(t) for t in texts), strict=True) if texts else ((), ())
    requests = [
        LossRequest(certainty_prompt(render, p, a), f" {s}")
        for p, a in zip(prompts, answers, strict=True)
        for s in (SURE, UNSURE)
    ]
    losses = llm.loss(requests) if requests else []
    unsure = [losses[2 * i + 1].total < losses[2 * i].total for i in range(len(answers))]
    # P(sure) / (P(sure) + P(unsure)) = sigmoid(NLL(unsure) - NLL(sure))
    confidence = [1 / (1 + math.exp(min(700.0, losses[2 * i].total - losses[2 * i + 1].total)))
                  for i in range(len(answers))]
    correct = [is_correct(a, g, metric, threshold) for a, (_, _, g) in zip(answers, fields, strict=True)]
    answered = [c for c, u in zip(correct, unsure, strict=True) if not u]
    doubted = [c for c, u in zip(correct, unsure, strict=True) if u]
    n = len(rows)
    return {
        "answered_accuracy": sum(answered) / len(answered) if answered else None,
        "unsure_share": sum(unsure) / n if n else 0.0,
        "accuracy": sum(correct) / n if n else 0.0,
        "unsure_accuracy": sum(doubted) / len(doubted) if doubted else None,
        "average_precision": _average_precision(correct, confidence),
        "written_unsure": sum(1 for w in written if w),
        "n": n,
        "predictions": [
            {"answer": a, "correct": c, "unsure": u, "confidence": round(p, 6), "text": t}
            for a, c, u, p, t in zip(answers, correct, unsure, confidence, texts, strict=True)
        ],
    }


def _average_precision(correct: Sequence[bool], confidence: Sequence[float]) -> float | None:
    if not any(correct) or all(correct):
        return None
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(correct, confidence))


def evaluate_refusal(
    model,
    tokenizer,
    rows: Sequence[Mapping[str, Any]],
    max_new_tokens: int = 64,
    *,
    batch_size: int = 8,
    metric: str = "f1",
    threshold: float = 0.5,
) -> dict:
    """R-Tuning's evaluation on held-out QA (closed-book when the rows have no context): accuracy on
    the questions the model answers, and the share it is unsure of.

    Each question is answered greedily; the answer (cut where the model starts the certainty
    question itself) is fed back followed by "Are you sure you accurately answered the question
    based on your internal knowledge?", and the model is unsure when " I am unsure." is likelier
    than " I am sure." there (:func:`evaluate_certainty`, which also counts how often the
    generated text itself said "I am unsure"). Returns answered_accuracy, unsure_share,
    accuracy, unsure_accuracy, written_unsure, n and per-row predictions.
    """
    from pipelines.llm.hf import HFBackend
    from pipelines.llm.nll import render_chat

    model.eval()
    backend = HFBackend(model, tokenizer, generation_batch_size=batch_size)
    return evaluate_certainty(backend, rows, lambda p: render_chat(tokenizer, p), metric=metric,
                              threshold=threshold, max_tokens=max_new_tokens)


def refusal_eval(metric: str = "f1", threshold: float = 0.5):
    """The fine-tuning evaluation's ``extra_eval`` hook for a model trained on R-Tuning rows
    (:class:`pipelines.finetune.evaluate.ExtraEval`), judged as the transform judged (``metric``,
    ``threshold``): refusal_answered_accuracy, refusal_unsure_share and refusal_accuracy."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}: use one of {METRICS}")

    def extra_eval(model, tokenizer, rows, *, max_new_tokens: int, batch_size: int) -> dict[str, Any]:
        res = evaluate_refusal(model, tokenizer, rows, max_new_tokens, batch_size=batch_size,
                               metric=metric, threshold=threshold)
        return {f"refusal_{k}": res[k] for k in ("answered_accuracy", "unsure_share", "accuracy")}

    return extra_eval
