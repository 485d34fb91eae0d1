"""What scoring cut or left undefined, counted, so the score record and the report can say it.

    from instruct_selectors.score_notes import truncation_counts, null_counts, score_notes
    cut = truncation_counts(llm, table)            # per shard: rows cut to the backend's max_length
    nulls = null_counts(scored_table)              # per score column: null values and why
    score_notes(add_truncation([cut, ...], shards), nulls, rows)   # lines for record and report

Two silent losses this makes visible:

* **Truncation.** Every loss pass scores at most ``max_length`` tokens per row
  (``pipelines/truncation.py``: the response keeps its head, the prompt its tail), so a 2 MB
  response is scored on its first few hundred tokens. :func:`truncation_counts` counts, for the
  row as scored by the main pass (chat prompt with instruction and context, then the response),
  the rows that lost tokens and those whose *response* lost tokens.
* **Null scores.** A score is null where it is not defined for a row: ``score_ctx_loss`` for a
  row without context (by design: there is nothing to take away), any loss score for an empty
  response, ``score_judge`` where the judge's answer never parsed (those rows are in
  ``scored/rejects-judge-*.jsonl``). :func:`null_counts` counts them per column, split into
  ``no_context`` and ``other``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl
from instruct_selectors.context_dependency import LOSS_COLUMN
from instruct_selectors.scores.base import build_request

from pipelines.llm.nll import encode
from pipelines.shards import atomic_write_text
from pipelines.truncation import budget

# Scores that are null by design for a row without context.
CONTEXT_SCORES = (LOSS_COLUMN,)
_UNCAPPED = 2**62  # encode() with no effective cap: the row's full length


def truncation_counts(llm: Any, table: pl.DataFrame, max_length: int | None = None) -> dict[str, int] | None:
    """``{"rows", "truncated", "response_truncated", "max_length"}`` for ``table`` as the main
    scoring pass sees it; None when the backend has no tokenizer to count with (e.g. llamacpp).

    ``max_length`` defaults to the backend's own (``llm.max_length``), the cap it applies."""
    tokenizer = getattr(llm, "tokenizer", None)
    max_length = max_length or getattr(llm, "max_length", None)
    if tokenizer is None or not max_length:
        return None
    truncated = response_truncated = 0
    for instruction, context, response in zip(
        table["instruction"].to_list(), table["context"].to_list(), table["response"].to_list(), strict=True
    ):
        enc = encode(tokenizer, build_request("full", instruction, context or "", response), _UNCAPPED)
        n_prompt, n_completion = len(enc.prompt_ids), len(enc.completion_ids)
        kept_prompt, kept_completion = budget(n_prompt, n_completion, max_length)
        truncated += (kept_prompt, kept_completion) != (n_prompt, n_completion)
        response_truncated += kept_completion < n_completion
    return {
        "rows": table.height,
        "truncated": truncated,
        "response_truncated": response_truncated,
        "max_length": int(max_length),
    }


def null_counts(table: pl.DataFrame) -> dict[str, dict[str, int]]:
    """Per numeric ``score_*`` column with nulls (or NaN): ``{"null", "no_context", "other"}``.
    ``no_context`` only for scores undefined without context (``CONTEXT_SCORES``)."""
    out: dict[str, dict[str, int]] = {}
    no_ctx = (table["context"].fill_null("") == "") if "context" in table.columns else None
    for col, dtype in table.schema.items():
        if not col.startswith("score_") or not dtype.is_numeric():
            continue
        missing = table[col].is_null() | (table[col].cast(pl.Float64).is_nan().fill_null(False))
        n = int(missing.sum())
        if not n:
            continue
        by_context = int((missing & no_ctx).sum()) if (col in CONTEXT_SCORES and no_ctx is not None) else 0
        out[col] = {"null": n, "no_context": by_context, "other": n - by_context}
    return out


def add_truncation(counts: list[Mapping[str, int] | None], shards: int) -> dict[str, Any]:
    """Per-shard :func:`truncation_counts` summed over the ``shards`` of a run; ``shards_counted``
    says how many could be counted (a shard scored before counting existed, or by a backend
    without a tokenizer, is not)."""
    known = [c for c in counts if c]
    total = {k: sum(c[k] for c in known) for k in ("rows", "truncated", "response_truncated")}
    max_length = max((c["max_length"] for c in known), default=None)
    return {**total, "max_length": max_length, "shards_counted": len(known), "shards": shards}


def score_notes(
    truncation: Mapping[str, Any], nulls: Mapping[str, Mapping[str, int]], rows: int
) -> list[str]:
    """Lines for the score record's ``notes`` and the run report: what was cut or left null."""
    notes = []
    if truncation["truncated"]:
        notes.append(
            f"{truncation['truncated']} of {truncation['rows']} rows truncated to model.max_length="
            f"{truncation['max_length']} tokens for scoring ({truncation['response_truncated']} of them "
            "lost response tokens: scored on the response's head only)"
        )
    if truncation["shards_counted"] < truncation["shards"]:
        notes.append(
            f"truncation counted on {truncation['shards_counted']} of {truncation['shards']} shards (the others "
            "were scored before it was counted, or by a backend without a tokenizer)"
        )
    for col, n in nulls.items():
        why = []
        if n["no_context"]:
            why.append(f"{n['no_context']} without context")
        if n["other"]:
            why.append(f"{n['other']} for other reasons (empty response, unparsed judge answer)")
        notes.append(f"{col} null for {n['null']} of {rows} rows: " + ", ".join(why))
    return notes


def write_shard_counts(path: Path, llm: Any, table: pl.DataFrame, made_from: str | None = None) -> None:
    """Save what scoring ``table`` (one shard) with ``llm`` cut, and the key of what the shard is
    made from, beside the shard (before it, so a shard on disk always has its counts; a resumed
    run reuses them, and rescoring is decided by ``made_from``). ``llm`` None: no model pass."""
    counts = truncation_counts(llm, table) if llm is not None else None
    atomic_write_text(Path(path), json.dumps({"truncation": counts, "made_from": made_from}, sort_keys=True))


def score_losses(count_files: Sequence[Path], scored_shards: Sequence[Path], rows: int) -> dict[str, Any]:
    """For the score record: ``truncation`` (summed over the shards' count files), ``nulls`` (per
    score column, from the scored shards) and ``notes`` (the same as sentences)."""
    cut = add_truncation(
        [json.loads(Path(p).read_text()).get("truncation") for p in count_files], len(scored_shards)
    )
    nulls: dict[str, dict[str, int]] = {}
    if scored_shards:
        scored = (
            pl.scan_parquet(list(scored_shards)).select(pl.col("context"), pl.col("^score_.*$")).collect()
        )
        nulls = null_counts(scored)
    return {"truncation": cut, "nulls": nulls, "notes": score_notes(cut, nulls, rows)}
