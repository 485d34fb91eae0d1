"""Training data for the fine-tuning stage: chat formatting, assistant-only labels, ``[IND]``.

* :func:`chat_rows` turns the example table (instruction/context/response/meta), an HF dataset or
  a list of dicts with chat ``messages`` into one list of messages per row, appending the
  conditional-instruction indicator to context-dependent rows when asked.
* :func:`encode_chat` renders messages with the model's own chat template and returns token ids
  plus labels that are -100 everywhere except the assistant turns (their text and the
  end-of-turn token), so the loss is on assistant tokens only.
* :func:`add_indicator` / :func:`ensure_indicator_token` are the two halves of conditional
  instruction fine-tuning: training appends ``" [IND]"`` to the user message of rows tagged
  ``meta.ctx_dependent``; inference appends it when the prompt carries a context.
* :func:`load_examples` reads a saved selection (Parquet shard folder/file or JSONL).

Try it: ``python -c "from pipelines.finetune.data import *; from pipelines.llm.tiny import tiny_tokenizer;
print(encode_chat(tiny_tokenizer(), [{'role':'user','content':'hi'},{'role':'assistant','content':'yo'}]))"``
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import torch

from pipelines.schema import make_example, meta_of, to_messages, to_table

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
    out = [dict(m) for m in messages]
    users = [i for i, m in enumerate(out) if m["role"] == "user"]
    if not users:
        raise ValueError("add_indicator: no user message to mark")
    last = out[users[-1]]
    if has_context is None:
        has_context = "\n\n" in last["content"].strip()
    if has_context and not last["content"].endswith(INDICATOR):
        last["content"] = last["content"] + " " + INDICATOR
    return out


def ensure_indicator_token(tokenizer, model=None) -> int:
    """Add ``[IND]`` to ``tokenizer`` (in place) and grow ``model``'s embeddings to match; return its id.

    The new embedding row is set to the mean of the existing rows (deterministic, unlike
    transformers' sampled init), so a base model re-built at load time gets the same row.
    """
    from tokenizers import AddedToken

    if INDICATOR not in tokenizer.get_vocab():
        tokenizer.add_tokens([AddedToken(INDICATOR, special=True, normalized=False)], special_tokens=True)
    token_id = tokenizer.convert_tokens_to_ids(INDICATOR)
    if model is not None:
        grow_embeddings(model, len(tokenizer))
    return token_id


@torch.no_grad()
def grow_embeddings(model, vocab_size: int) -> None:
    """Resize input/output embeddings to ``vocab_size``; new rows get the mean of the old ones."""
    old = model.get_input_embeddings().weight.shape[0]
    if old >= vocab_size:
        return
    model.resize_token_embeddings(vocab_size, mean_resizing=False)
    for layer in {
        id(m): m for m in (model.get_input_embeddings(), model.get_output_embeddings()) if m is not None
    }.values():
        layer.weight[old:] = layer.weight[:old].mean(dim=0, keepdim=True)


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


def chat_rows(table_or_dataset: Any, conditional_indicator: bool = False) -> list[list[dict]]:
    """One message list per row; with ``conditional_indicator`` tagged rows get ``" [IND]"``."""
    out = []
    for row in _iter_rows(table_or_dataset):
        messages = _row_messages(row)
        if conditional_indicator and is_ctx_dependent(row):
            messages = add_indicator(messages, has_context=True)
        out.append(messages)
    if not out:
        raise ValueError("no training rows")
    return out


# --------------------------------------------------------------------------- tokenisation
@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]

    @property
    def n_target(self) -> int:
        return sum(1 for t in self.labels if t != IGNORE_INDEX)


def _render(tokenizer, messages: Sequence[Mapping[str, str]], generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(
        list(messages), tokenize=False, add_generation_prompt=generation_prompt
    )


def encode_chat(tokenizer, messages: Sequence[Mapping[str, str]], max_length: int | None = None) -> Encoded:
    """Token ids and labels for one conversation; only assistant turns (+ end-of-turn) are labelled.

    The text is rendered once per assistant turn and cut into segments (prompt up to the assistant
    header, then the answer). Each segment is tokenised on its own, which is also how inference
    sees it: the prompt is tokenised, the answer is generated token by token after it.
    """
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
    rest = _render(tokenizer, messages, generation_prompt=False)[len(done) :]
    segments.append((rest, False))

    input_ids: list[int] = []
    labels: list[int] = []
    for text, target in segments:
        if not text:
            continue
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        input_ids += ids
        labels += ids if target else [IGNORE_INDEX] * len(ids)
    if max_length is not None:
        input_ids, labels = input_ids[:max_length], labels[:max_length]
    return Encoded(input_ids, labels)


def encode_rows(
    tokenizer, conversations: Sequence[Sequence[Mapping[str, str]]], max_length: int
) -> tuple[list[Encoded], int]:
    """Encode every conversation; drop those whose answer was cut away by ``max_length``. Returns (kept, dropped)."""
    kept = [e for e in (encode_chat(tokenizer, m, max_length) for m in conversations) if e.n_target > 0]
    return kept, len(conversations) - len(kept)


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
def _qa_table(rows: list[dict]) -> pl.DataFrame:
    """Context-QA rows (context, question, answer) -> example table, tagged context-dependent."""
    return to_table(
        make_example(
            r["question"],
            str(r["answer"]),
            r.get("context") or "",
            source="context_qa",
            meta={"ctx_dependent": bool(r.get("context"))},
        )
        for r in rows
    )


def load_examples(path: str | Path, limit: int | None = None) -> pl.DataFrame | list[dict]:
    """Read a selection: a Parquet shard folder or file, or JSONL (example rows, ``messages`` rows or QA rows).

    If the table has a boolean ``keep`` column (a selector's decision), only kept rows are used.
    Returns a polars example table, or a list of dicts for ``messages``-only JSONL.
    """
    path = Path(path)
    if path.is_dir():
        # Stage output is part-*.parquet shards; accept any Parquet files in the folder too.
        files = sorted(path.glob("part-*.parquet")) or sorted(path.glob("*.parquet"))
        if not files:
            raise FileNotFoundError(f"no Parquet files in {path}")
        table = pl.concat([pl.read_parquet(f) for f in files], how="diagonal_relaxed")
    elif path.suffix == ".parquet":
        table = pl.read_parquet(path)
    elif path.suffix in {".jsonl", ".json"}:
        with path.open(encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
        if rows and "messages" in rows[0] and "instruction" not in rows[0]:
            return rows[:limit] if limit else rows
        table = (
            _qa_table(rows)
            if rows and "question" in rows[0]
            else pl.DataFrame(rows, infer_schema_length=None)
        )
    else:
        raise ValueError(f"cannot read {path}: expected a Parquet folder/file or a .jsonl file")
    if "keep" in table.columns and table["keep"].dtype == pl.Boolean:
        table = table.filter(pl.col("keep"))
    if "meta" in table.columns and table["meta"].dtype != pl.Utf8:
        table = table.with_columns(pl.col("meta").map_elements(json.dumps, return_dtype=pl.Utf8))
    return table.head(limit) if limit else table
