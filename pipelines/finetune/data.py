"""Training data for the fine-tuning stage: chat formatting, assistant-only labels, ``[IND]``.

* :func:`chat_rows` turns the example table (instruction/context/response/meta), an HF dataset or
  a list of dicts with chat ``messages`` into one list of messages per row, appending the
  conditional-instruction indicator to context-dependent rows when asked.
* :func:`encode_chat` renders messages with the model's own chat template and returns token ids
  plus labels that are -100 everywhere except the assistant turns (their text and the
  end-of-turn token), so the loss is on assistant tokens only. Over-long rows are cut by
  :mod:`pipelines.truncation` (the scorer's rule): the answer whole up to its cap, the prompt's tail.
* :func:`add_indicator` / :func:`ensure_indicator_token` are the two halves of conditional
  instruction fine-tuning: training appends ``" [IND]"`` to the user message of rows tagged
  ``meta.ctx_dependent``; inference appends it when the prompt carries a context. Both go through
  :mod:`pipelines.finetune.prompt_tags` (:data:`INDICATOR_TAG`), the mechanism the control tokens
  of :mod:`pipelines.finetune.control` share.
* :func:`load_examples` / :func:`read_rows` read a saved selection or an evaluation set through
  :func:`pipelines.io.read_examples` (the project's one example reader; bad rows are rejects).

Try it: ``python -c "from pipelines.finetune.data import *; from pipelines.llm.tiny import tiny_tokenizer;
print(encode_chat(tiny_tokenizer(), [{'role':'user','content':'hi'},{'role':'assistant','content':'yo'}]))"``
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import torch

from pipelines.export import write_rejects
from pipelines.finetune.prompt_tags import PromptTag, apply_tags, ensure_tokens, mark, restore_cut_tokens
from pipelines.io import read_examples
from pipelines.schema import meta_of, to_messages, with_meta_field
from pipelines.truncation import truncate_ids

IGNORE_INDEX = -100
INDICATOR = "[IND]"


# --------------------------------------------------------------------------- indicator
def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"true", "1", "yes"}
    return bool(value)


def is_ctx_dependent(row: Mapping[str, Any]) -> bool:
    """True when the row is tagged context-dependent (``meta.ctx_dependent``, or a top-level field)."""
    if "ctx_dependent" in row and row["ctx_dependent"] is not None:
        return _truthy(row["ctx_dependent"])
    return _truthy(meta_of(row.get("meta")).get("ctx_dependent", False))


def add_indicator(messages: Sequence[Mapping[str, str]], has_context: bool | None = None) -> list[dict]:
    """Copy of ``messages`` with ``" [IND]"`` appended to the last user message.

    ``has_context``: whether the prompt carries a context passage. ``None`` detects it the way
    :func:`pipelines.schema.user_content` builds prompts (instruction, blank line, passage).
    Without a context the messages come back unchanged; the indicator is never added twice.
    """
    if not any(m["role"] == "user" for m in messages):
        raise ValueError("add_indicator: no user message to mark")
    if has_context is None:
        has_context = "\n\n" in [m for m in messages if m["role"] == "user"][-1]["content"].strip()
    return mark(messages, INDICATOR, "suffix") if has_context else [dict(m) for m in messages]


# Training: context-dependent rows get " [IND]" (they carry a context by definition).
INDICATOR_TAG = PromptTag(
    "conditional_indicator", (INDICATOR,), "suffix", lambda row: INDICATOR if is_ctx_dependent(row) else None
)


def ensure_indicator_token(tokenizer, model=None) -> int:
    """Add ``[IND]`` to ``tokenizer`` (in place) and grow ``model``'s embeddings to match; return its id.

    The new embedding row is set to the mean of the existing rows (:func:`pipelines.finetune.prompt_tags.grow_embeddings`).
    """
    return ensure_tokens(tokenizer, [INDICATOR], model)[0]


# --------------------------------------------------------------------------- rows -> messages
def _row_messages(row: Mapping[str, Any]) -> list[dict]:
    if row.get("messages") is not None:
        return [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
    if "instruction" in row and "response" in row:
        return to_messages(row["instruction"], row.get("context") or "", row["response"])
    if {"question", "answer"} <= set(row):  # context QA rows (context, question, answer)
        return to_messages(row["question"], row.get("context") or "", str(row["answer"]))
    raise ValueError(
        f"row has neither `messages` nor instruction/response nor question/answer: {sorted(row)}"
    )


def _iter_rows(table_or_dataset: Any) -> Iterable[Mapping[str, Any]]:
    if isinstance(table_or_dataset, pl.DataFrame):
        return table_or_dataset.iter_rows(named=True)
    return iter(table_or_dataset)  # HF Dataset or a list of dicts: both yield dicts


def chat_rows(
    table_or_dataset: Any, conditional_indicator: bool = False, tags: Sequence[PromptTag] = ()
) -> list[list[dict]]:
    """One message list per row; with ``conditional_indicator`` tagged rows get ``" [IND]"``.

    ``tags``: further :class:`~pipelines.finetune.prompt_tags.PromptTag` s written into each row
    (e.g. the control tokens of :mod:`pipelines.finetune.control`), after ``[IND]``.
    """
    tags = ((INDICATOR_TAG,) if conditional_indicator else ()) + tuple(tags)
    out = []
    for row in _iter_rows(table_or_dataset):
        out.append(apply_tags(row, _row_messages(row), tags))
    if not out:
        raise ValueError("no training rows")
    return out


# --------------------------------------------------------------------------- tokenisation
@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    truncated: bool = False  # the prompt or the answer lost tokens to max_length

    @property
    def n_target(self) -> int:
        return sum(1 for t in self.labels if t != IGNORE_INDEX)


def _render(tokenizer, messages: Sequence[Mapping[str, str]], generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(
        list(messages), tokenize=False, add_generation_prompt=generation_prompt
    )


def _segments(tokenizer, messages: Sequence[Mapping[str, str]]) -> list[tuple[str, bool]]:
    """The rendered conversation cut into (text, is_answer) pieces, in order."""
    segments: list[tuple[str, bool]] = []
    done = ""
    eos = tokenizer.eos_token
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = _render(tokenizer, messages[:i], generation_prompt=True)
        full = _render(tokenizer, messages[: i + 1], generation_prompt=False)
        if not prompt.startswith(done) or not full.startswith(prompt):
            raise ValueError(
                "chat template does not render conversations prefix by prefix; cannot mask prompts"
            )
        answer = full[len(prompt) :]
        # Label the answer and its end-of-turn token; whatever the template adds after it is not the answer.
        cut = answer.rfind(eos) + len(eos) if eos and eos in answer else len(answer)
        segments += [(prompt[len(done) :], False), (answer[:cut], True), (answer[cut:], False)]
        done = full
    if not segments:
        raise ValueError("conversation has no assistant message to learn from")
    segments.append((_render(tokenizer, messages, generation_prompt=False)[len(done) :], False))
    return segments


def encode_chat(
    tokenizer,
    messages: Sequence[Mapping[str, str]],
    max_length: int | None = None,
    keep_ids: Collection[int] = (),
) -> Encoded:
    """Token ids and labels for one conversation; only assistant turns (+ end-of-turn) are labelled.

    The text is rendered once per assistant turn and cut into segments (prompt up to the assistant
    header, then the answer). Each segment is tokenised on its own, which is also how inference
    sees it: the prompt is tokenised, the answer is generated token by token after it.

    Over ``max_length``: the last answer is the completion and everything before it (earlier
    turns too, with their labels) the prompt, cut by :func:`pipelines.truncation.truncate_ids`
    -- the scorer's rule, so both see the same answer tokens. Template text after the last
    answer carries no loss and goes first. Rows are never dropped. ``keep_ids``: prompt-tag tokens
    (control tokens, ``[IND]``) that a cut must not lose: they go back at the head of the kept
    prompt tail, unlabelled (:func:`pipelines.finetune.prompt_tags.restore_cut_tokens`).
    """
    pieces = [
        (tokenizer(text, add_special_tokens=False)["input_ids"], target)
        for text, target in _segments(tokenizer, messages)
        if text
    ]
    input_ids = [t for ids, _ in pieces for t in ids]
    labels = [t for ids, target in pieces for t in (ids if target else [IGNORE_INDEX] * len(ids))]
    if max_length is None or len(input_ids) <= max_length:
        return Encoded(input_ids, labels)
    last = max(i for i, (_, target) in enumerate(pieces) if target)
    start = sum(len(ids) for ids, _ in pieces[:last])
    completion = pieces[last][0]
    prompt, completion, cut = truncate_ids(input_ids[:start], completion, max_length)
    prompt_labels = labels[start - len(prompt) : start]
    if keep_ids:
        prompt, restored = restore_cut_tokens(input_ids[:start], prompt, keep_ids)
        prompt_labels = [IGNORE_INDEX] * restored + prompt_labels[restored:]
    return Encoded(prompt + completion, prompt_labels + completion, cut)


def encode_rows(
    tokenizer,
    conversations: Sequence[Sequence[Mapping[str, str]]],
    max_length: int,
    keep_ids: Collection[int] = (),
) -> tuple[list[Encoded], int]:
    """Encode every conversation (none is dropped). Returns (encoded, how many were truncated).

    ``keep_ids``: tag tokens a truncated prompt keeps (see :func:`encode_chat`)."""
    encoded = [encode_chat(tokenizer, m, max_length, keep_ids) for m in conversations]
    return encoded, sum(e.truncated for e in encoded)


class ChatCollator:
    """Right-pads a batch of ``{input_ids, labels}``; padded positions are masked out of attention and loss."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        ids, labels, mask = [], [], []
        for f in features:
            pad = width - len(f["input_ids"])
            ids.append(list(f["input_ids"]) + [self.pad_token_id] * pad)
            labels.append(list(f["labels"]) + [IGNORE_INDEX] * pad)
            mask.append([1] * len(f["input_ids"]) + [0] * pad)
        return {
            "input_ids": torch.tensor(ids, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
            "attention_mask": torch.tensor(mask, dtype=torch.long),
        }


# --------------------------------------------------------------------------- files
log = logging.getLogger(__name__)


def _conversation(row: Mapping[str, Any], meta: Mapping[str, Any]) -> list[dict]:
    """A chat row rebuilt whole: pipelines.io keeps its system prompt and earlier turns in meta."""
    system = [{"role": "system", "content": meta["system"]}] if meta.get("system") else []
    history = [{"role": m["role"], "content": m["content"]} for m in meta.get("history") or []]
    last = [
        {"role": "user", "content": row["instruction"]},
        {"role": "assistant", "content": row["response"]},
    ]
    return system + history + last


def read_rows(path: str | Path, limit: int | None = None) -> tuple[pl.DataFrame | list[dict], list[dict]]:
    """``(rows, rejects)`` of a selection or evaluation file, read by :func:`pipelines.io.read_examples`.

    Any container and row format that reader takes (Parquet shard folder or file, JSONL, JSON, a
    saved HF dataset). A bad line is a reject (file, line, field, reason), not an error.

    * The reader files fields outside the example schema under meta: a ``keep`` that is false
      (a selector's decision) drops the row; ``ctx_dependent`` is read from there by
      :func:`is_ctx_dependent` (a key the row's own meta already had wins over the column).
    * Context-QA rows (question, answer [, context]) get source ``context_qa`` (evaluation adds
      EM/F1 for those) and ``meta.ctx_dependent`` = they carry a context.
    * Chat ``messages`` rows come back as ``{"messages", "meta"}`` dicts with the whole
      conversation, so training sees the system prompt and every turn; the rest as an example table.

    ``limit`` keeps the first N rows that are left.
    """
    res = read_examples(path)
    table = res.table
    keep = [meta_of(m).get("keep") is not False for m in table["meta"].to_list()]
    if not all(keep):
        table = table.filter(pl.Series(keep, dtype=pl.Boolean))
    if limit:
        table = table.head(limit)
    if res.fmt == "qa":
        table = with_meta_field(table, "ctx_dependent", [bool(c) for c in table["context"]])
        table = table.with_columns(pl.lit("context_qa").alias("source"))
    if res.fmt == "messages":
        chats = [
            {"messages": _conversation(r, meta_of(r["meta"])), "meta": r["meta"]}
            for r in table.iter_rows(named=True)
        ]
        return chats, res.rejects
    return table, res.rejects


def note_rejects(path: str | Path, rejects: list[dict], rejects_path: str | Path | None = None) -> int:
    """Log how many rows of ``path`` were rejected, write them to ``rejects_path`` when given; the count."""
    if rejects:
        reasons = Counter(f"{r['field']}: {r['reason']}" if r["field"] else r["reason"] for r in rejects)
        log.warning("%s: %d bad row(s) left out (%s)", path, len(rejects), dict(reasons.most_common(3)))
    if rejects_path is not None:
        write_rejects(rejects, rejects_path)
    return len(rejects)


def load_examples(
    path: str | Path, limit: int | None = None, *, rejects_path: str | Path | None = None
) -> pl.DataFrame | list[dict]:
    """The rows of :func:`read_rows`: an example table, or ``{"messages", "meta"}`` dicts for chat files.

    Bad rows never raise: their count is logged as a warning, and they are written to
    ``rejects_path`` (JSONL with file, line, field, reason) when one is given.
    """
    rows, rejects = read_rows(path, limit)
    note_rejects(path, rejects, rejects_path)
    return rows
