"""Evaluation for fine-tuned models: held-out loss, and exact match / token F1 with greedy generation.

* :func:`heldout_loss` -- mean NLL per assistant token over a target set (same masking and
  truncation as training: :mod:`pipelines.truncation`).
* :func:`exact_match` / :func:`token_f1` -- SQuAD-style, on strings (:mod:`pipelines.qa_metrics`).
* :func:`evaluate_qa` -- greedy, batched generation on context-QA rows (context, question,
  answer), e.g. ``../shared/datasets/context_qa/*.jsonl``, optionally with the ``[IND]`` indicator
  and/or the ``<|good|>`` control token (:mod:`pipelines.finetune.control`);
  over-long prompts keep their tail by the same rule. :func:`load_qa_rows` reads them through
  :func:`pipelines.io.read_examples` (bad lines are counted rejects, not errors).
* :func:`evaluate_run` -- all of it for one run; a data method's own evaluation comes in from the
  caller through ``extra_eval`` (:class:`ExtraEval`), so this core module names no method.

Example (embedded model, 20 rows)::

    python -c "from pipelines.finetune.evaluate import *; from pipelines.llm.embedded import load_model_and_tokenizer as L;
    m, t = L(); print(evaluate_qa(m, t, load_qa_rows('../shared/datasets/context_qa/adversarial_qa_parsed.jsonl', 20)))"
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

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
from pipelines.finetune.target_logits import target_nll_sum
from pipelines.io import read_examples
from pipelines.llm.nll import render_chat
from pipelines.qa_metrics import exact_match, qa_fields, token_f1
from pipelines.schema import meta_of, user_content
from pipelines.truncation import budget


class ExtraEval(Protocol):
    """A method's own evaluation of a trained model on held-out QA rows, run by :func:`evaluate_run`
    after EM/F1; returns metrics (prefixed with the method's name) merged into the run's metrics."""

    def __call__(
        self, model: Any, tokenizer: Any, rows: list[dict[str, Any]], *, max_new_tokens: int, batch_size: int
    ) -> dict[str, Any]: ...


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
        with torch.no_grad():  # no autograd graph: a LoRA model's trainable weights would keep one
            nll, n = target_nll_sum(model, batch)  # logits at answer positions only: a fraction of the memory
        total += nll
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
    fields = [qa_fields(r) for r in rows]
    prompts = [qa_prompt(q, c, indicator, good) for q, c, _ in fields]
    preds = generate_answers(
        model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size, max_length=max_length
    )
    golds = [a if isinstance(a, list | tuple) else str(a) for _, _, a in fields]  # several golds: best counts
    em = [exact_match(p, g) for p, g in zip(preds, golds, strict=True)]
    f1 = [token_f1(p, g) for p, g in zip(preds, golds, strict=True)]
    n = max(len(rows), 1)
    return {"exact_match": sum(em) / n, "f1": sum(f1) / n, "n": len(rows), "predictions": preds}


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
    extra_eval: ExtraEval | None = None,
) -> dict:
    """Held-out loss, plus EM/F1 when ``rows`` are context-QA (with and without ``[IND]`` if it was trained).

    ``control_tokens`` (the model was trained with them): every prompt, for the loss and for
    generation, starts with ``<|good|>``. ``extra_eval``: a method's own evaluation on the QA
    rows (:class:`ExtraEval`), its metrics merged in.
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
        if extra_eval is not None:
            metrics.update(extra_eval(model, tokenizer, qa_rows, max_new_tokens=max_new_tokens, batch_size=batch_size))
        if predictions_path is not None:
            from pipelines.shards import atomic_write_jsonl

            atomic_write_jsonl(
                (
                    {"question": q, "answer": a, **{k: v[i] for k, v in predictions.items()}}
                    for i, (q, _, a) in enumerate(qa_fields(r) for r in qa_rows)
                ),
                Path(predictions_path),
            )
    return metrics
