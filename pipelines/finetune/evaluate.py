"""Evaluation for fine-tuned models: held-out loss, and exact match / token F1 with greedy generation.

* :func:`heldout_loss` -- mean NLL per assistant token over a target set (same masking and
  truncation as training: :mod:`pipelines.truncation`).
* :func:`exact_match` / :func:`token_f1` -- SQuAD-style: lower-case, strip punctuation and
  articles (a/an/the), collapse whitespace; F1 over bag-of-tokens overlap. Several gold answers:
  the best one counts.
* :func:`evaluate_qa` -- greedy, batched generation on context-QA rows (context, question,
  answer), e.g. ``../shared/datasets/context_qa/*.jsonl``, optionally with the ``[IND]`` indicator
  and/or the ``<|good|>`` control token (:mod:`pipelines.finetune.control`);
  over-long prompts keep their tail by the same rule. :func:`load_qa_rows` reads them through
  :func:`pipelines.io.read_examples` (bad lines are counted rejects, not errors).

Example (embedded model, 20 rows)::

    python -c "from pipelines.finetune.evaluate import *; from pipelines.llm.embedded import load_model_and_tokenizer as L;
    m, t = L(); print(evaluate_qa(m, t, load_qa_rows('../shared/datasets/context_qa/adversarial_qa_parsed.jsonl', 20)))"
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl
import torch

from pipelines.finetune.control import CONTROL_TOKENS, GOOD_TAG, prompt_good
from pipelines.finetune.data import (
    INDICATOR,
    INDICATOR_TAG,
    ChatCollator,
    add_indicator,
    chat_rows,
    encode_rows,
    note_rejects,
)
from pipelines.finetune.prompt_tags import restore_cut_tokens
from pipelines.io import read_examples
from pipelines.llm.nll import render_chat
from pipelines.schema import meta_of, user_content
from pipelines.truncation import budget

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


# --------------------------------------------------------------------------- metrics on strings
def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCT)).split())


def _golds(gold: str | Sequence[str]) -> list[str]:
    return [gold] if isinstance(gold, str) else list(gold)


def exact_match(prediction: str, gold: str | Sequence[str]) -> float:
    return float(any(normalize_answer(prediction) == normalize_answer(g) for g in _golds(gold)))


def _f1(prediction: str, gold: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred or not ref:
        return float(pred == ref)  # both empty -> 1, one empty -> 0
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, gold: str | Sequence[str]) -> float:
    return max(_f1(prediction, g) for g in _golds(gold))


# --------------------------------------------------------------------------- held-out loss
@torch.no_grad()
def heldout_loss(
    model,
    tokenizer,
    table: Any,
    *,
    batch_size: int = 8,
    max_length: int = 512,
    conditional_indicator: bool = False,
    control_tokens: bool = False,
) -> float:
    """Mean NLL per assistant token over ``table`` (example table, or rows with ``messages``).

    Rows are encoded exactly as for training (:func:`encode_rows`): over-long rows are cut by the
    one truncation rule and none is dropped. ``control_tokens``: every prompt starts with
    ``<|good|>`` (a model trained with control tokens, asked for good answers).
    """
    tags = ((INDICATOR_TAG,) if conditional_indicator else ()) + ((GOOD_TAG,) if control_tokens else ())
    encoded, _ = encode_rows(tokenizer, chat_rows(table, tags=tags), max_length, tag_ids(tokenizer))
    encoded.sort(key=lambda e: len(e.input_ids))  # similar lengths per batch: little padding
    collate = ChatCollator(tokenizer.pad_token_id)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(encoded), batch_size):
        chunk = encoded[start : start + batch_size]
        batch = {k: v.to(device) for k, v in collate([vars(e) for e in chunk]).items()}
        n = sum(e.n_target for e in chunk)
        # The model's loss is the mean over this batch's target tokens: weight it back to a sum.
        total += float(model(**batch).loss) * n
        count += n
    model.train(was_training)
    return total / count


# --------------------------------------------------------------------------- QA by generation
def load_qa_rows(
    path: str | Path, limit: int | None = None, *, rejects_path: str | Path | None = None
) -> list[dict]:
    """QA rows ``{question, context, answer}`` of a file, read by :func:`pipelines.io.read_examples`.

    Any format that reader takes; the fields come from the example table (question = instruction,
    answer = response), the file's other fields (kept in meta) ride along. Bad rows never raise:
    their count is logged, and they are written to ``rejects_path`` when one is given.
    """
    res = read_examples(path)
    note_rejects(path, res.rejects, rejects_path)
    table = res.table.head(limit) if limit else res.table
    return [
        {**meta_of(r["meta"]), "question": r["instruction"], "context": r["context"], "answer": r["response"]}
        for r in table.iter_rows(named=True)
    ]


def _qa_fields(row: Mapping[str, Any]) -> tuple[str, str, Any]:
    if "question" in row:
        return row["question"], row.get("context") or "", row["answer"]
    return row["instruction"], row.get("context") or "", row["response"]


def qa_prompt(question: str, context: str, indicator: bool = False, good: bool = False) -> list[dict]:
    """The user turn a QA row is asked with (same shape as training rows); ``[IND]`` if asked and
    there is a context; ``<|good|>`` first if ``good`` (:func:`pipelines.finetune.control.prompt_good`)."""
    messages = [{"role": "user", "content": user_content(question, context)}]
    messages = add_indicator(messages, has_context=bool(context)) if indicator else messages
    return prompt_good(messages) if good else messages


def tag_ids(tokenizer) -> set[int]:
    """Ids of the prompt-tag tokens (``[IND]``, ``<|good|>``, ``<|bad|>``) this tokenizer has."""
    vocab = tokenizer.get_vocab()
    return {vocab[t] for t in (INDICATOR, *CONTROL_TOKENS) if t in vocab}


def fit_prompts(
    tokenizer, prompts: Sequence[Sequence[Mapping[str, str]]], max_new_tokens: int, max_length: int
) -> list[list[dict] | str]:
    """Prompts cut as training cuts a row whose answer is ``max_new_tokens`` long.

    :func:`pipelines.truncation.budget` decides how much of the rendered prompt stays; a prompt
    that fits is returned unchanged, a longer one as the text of its tail tokens (the backend
    uses a string prompt verbatim, so the chat template is not applied twice). A prompt tag the
    cut removed (``<|good|>`` starts the prompt) is put back at the head of the tail, as training does.
    """
    keep_ids = tag_ids(tokenizer)
    out: list[list[dict] | str] = []
    for p in prompts:
        ids = tokenizer(render_chat(tokenizer, p), add_special_tokens=False)["input_ids"]
        keep, _ = budget(len(ids), max_new_tokens, max_length)
        if keep == len(ids):
            out.append(list(p))
            continue
        tail, _ = restore_cut_tokens(ids, ids[len(ids) - keep :], keep_ids)
        out.append(tokenizer.decode(tail))
    return out


def generate_answers(
    model,
    tokenizer,
    prompts: Sequence[Sequence[Mapping[str, str]]],
    *,
    max_new_tokens: int = 32,
    batch_size: int = 8,
    max_length: int | None = None,
) -> list[str]:
    """Greedy answers to chat prompts, batched by the hf backend (left padding, length-sorted).

    With ``max_length``, over-long prompts keep their tail by the one truncation rule (:func:`fit_prompts`).
    """
    from pipelines.llm.base import Sampling
    from pipelines.llm.hf import HFBackend

    model.eval()
    backend = HFBackend(model, tokenizer, generation_batch_size=batch_size)
    todo = (
        fit_prompts(tokenizer, prompts, max_new_tokens, max_length)
        if max_length is not None
        else [list(p) for p in prompts]
    )
    return backend.generate(todo, Sampling(temperature=0.0, max_tokens=max_new_tokens))


def evaluate_qa(
    model,
    tokenizer,
    rows: Sequence[Mapping[str, Any]],
    max_new_tokens: int = 32,
    *,
    batch_size: int = 8,
    indicator: bool = False,
    good: bool = False,
    max_length: int | None = None,
) -> dict:
    """Exact match and token F1 (means over rows) of greedy answers; also returns the predictions.

    ``max_length``: cut over-long prompts as training cuts rows (see :func:`generate_answers`).
    """
    fields = [_qa_fields(r) for r in rows]
    prompts = [qa_prompt(q, c, indicator, good) for q, c, _ in fields]
    preds = generate_answers(
        model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size, max_length=max_length
    )
    golds = [a if isinstance(a, list | tuple) else str(a) for _, _, a in fields]  # several golds: best counts
    em = [exact_match(p, g) for p, g in zip(preds, golds, strict=True)]
    f1 = [token_f1(p, g) for p, g in zip(preds, golds, strict=True)]
    n = max(len(rows), 1)
    return {"exact_match": sum(em) / n, "f1": sum(f1) / n, "n": len(rows), "predictions": preds}


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
    than " I am sure." there (:func:`pipelines.refusal.evaluate_certainty`, which also counts how
    often the generated text itself said "I am unsure"). Returns answered_accuracy, unsure_share,
    accuracy, unsure_accuracy, written_unsure, n and per-row predictions.
    """
    from pipelines.llm.hf import HFBackend
    from pipelines.refusal import evaluate_certainty

    model.eval()
    backend = HFBackend(model, tokenizer, generation_batch_size=batch_size)
    return evaluate_certainty(backend, rows, lambda p: render_chat(tokenizer, p), metric=metric,
                              threshold=threshold, max_tokens=max_new_tokens)


# --------------------------------------------------------------------------- one call for a run
def _is_qa(rows: Any) -> bool:
    if isinstance(rows, pl.DataFrame):
        return "source" in rows.columns and rows.height > 0 and bool((rows["source"] == "context_qa").all())
    return bool(rows) and "question" in rows[0]


def evaluate_run(
    model,
    tokenizer,
    rows: Any,
    *,
    batch_size: int = 8,
    max_length: int = 512,
    max_new_tokens: int = 32,
    conditional_indicator: bool = False,
    control_tokens: bool = False,
    predictions_path: str | Path | None = None,
    refusal: Mapping[str, Any] | None = None,
) -> dict:
    """Held-out loss, plus EM/F1 when ``rows`` are context-QA (with and without ``[IND]`` if it was trained).

    ``control_tokens`` (the model was trained with them): every prompt, for the loss and for
    generation, starts with ``<|good|>``. ``refusal`` ({metric, threshold}; the model was trained
    on R-Tuning rows): also refusal_answered_accuracy, refusal_unsure_share and refusal_accuracy
    (:func:`evaluate_refusal`).
    """
    metrics: dict[str, Any] = {
        "eval_loss": heldout_loss(
            model,
            tokenizer,
            rows,
            batch_size=batch_size,
            max_length=max_length,
            conditional_indicator=conditional_indicator,
            control_tokens=control_tokens,
        )
    }
    if max_new_tokens > 0 and _is_qa(rows):
        qa_rows = list(rows.iter_rows(named=True)) if isinstance(rows, pl.DataFrame) else list(rows)
        variants = [False, True] if conditional_indicator else [False]
        predictions = {}
        for ind in variants:
            res = evaluate_qa(
                model,
                tokenizer,
                qa_rows,
                max_new_tokens,
                batch_size=batch_size,
                indicator=ind,
                good=control_tokens,
                max_length=max_length,
            )
            suffix = "_ind" if ind else ""
            metrics[f"exact_match{suffix}"], metrics[f"f1{suffix}"] = res["exact_match"], res["f1"]
            predictions[f"prediction{suffix}"] = res["predictions"]
        metrics["qa_rows"] = len(qa_rows)
        if refusal is not None:  # trained on R-Tuning rows: {metric, threshold} of the transform
            res = evaluate_refusal(model, tokenizer, qa_rows, max_new_tokens, batch_size=batch_size,
                                   metric=refusal["metric"], threshold=refusal["threshold"])
            metrics.update({f"refusal_{k}": res[k] for k in ("answered_accuracy", "unsure_share", "accuracy")})
        if predictions_path is not None:
            from pipelines.shards import atomic_write_jsonl

            atomic_write_jsonl(
                (
                    {"question": q, "answer": a, **{k: v[i] for k, v in predictions.items()}}
                    for i, (q, _, a) in enumerate(_qa_fields(r) for r in qa_rows)
                ),
                Path(predictions_path),
            )
    return metrics
