"""Conditional training with control tokens (Korbak et al. 2023, "Pretraining Language Models with
Human Preferences", the paper's best objective): every training row's prompt starts with
``<|good|>`` when its score passes a threshold and ``<|bad|>`` otherwise; at inference the model
is asked with ``<|good|>``. Selection becomes conditioning: rows a selector would drop are kept and
tagged instead of thrown away.

* :func:`control_labels` -- the token per row from any score column and a threshold (a value, or a
  quantile of the non-null scores). A null/NaN score gets ``<|bad|>``: a row whose quality is
  unknown (a judge that never answered) must not teach what ``<|good|>`` means.
* :func:`control_rows` -- the training table from the selection table (``selected/all.parquet``):
  every row, whatever the selector decided, except rows dedup dropped (a duplicate would count its
  text twice; dedup says nothing about quality) and rows held out for testing; plus the label
  column :data:`LABEL_COLUMN`. The selector's own ``keep`` is kept as ``selected``.
  :func:`write_control_rows` does it file to file for the flow's train stage.
* :data:`CONTROL_TAG` writes each row's label into its prompt (training); :func:`prompt_good` /
  :data:`GOOD_TAG` write ``<|good|>`` (inference and evaluation). Both go through
  :mod:`pipelines.finetune.prompt_tags`, the same mechanism as the ``[IND]`` indicator.

Label a run's selection and train on it from the shell (the flow does this with
``train.control_tokens``)::

    python -m pipelines.finetune.control runs/run-1a2b3c/selected/all.parquet labelled.parquet \
        --column score_judge --threshold 4
    python -m pipelines.finetune --selection labelled.parquet --control-tokens --model tiny --out out/ct
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from pipelines.finetune.prompt_tags import PromptTag, mark
from pipelines.schema import meta_of

GOOD = "<|good|>"
BAD = "<|bad|>"
CONTROL_TOKENS = (GOOD, BAD)
LABEL_COLUMN = "control_token"
# Selection columns that must not reach the trainer: pipelines.io reads a false `keep` as "drop the row".
_SELECTION_COLUMNS = ("keep", "dropped_by", "keep_reason", "select_rank", "dup_of")


def control_threshold(
    scores: pl.Series, threshold: float | None = None, quantile: float | None = None
) -> float:
    """The cut-off: ``threshold`` as given, or the ``quantile`` (0..1) of the non-null, non-NaN scores."""
    if (threshold is None) == (quantile is None):
        raise ValueError("control tokens: give exactly one of threshold= or quantile=")
    if threshold is not None:
        return float(threshold)
    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f"control tokens: quantile must be in [0, 1], got {quantile}")
    values = scores.cast(pl.Float64).fill_nan(None).drop_nulls()
    if values.is_empty():
        raise ValueError(f"control tokens: column {scores.name!r} has no scores to take a quantile of")
    return float(np.quantile(values.to_numpy(), quantile))


def control_labels(
    table: pl.DataFrame,
    column: str,
    threshold: float | None = None,
    quantile: float | None = None,
    largest: bool = True,
) -> pl.Series:
    """``<|good|>`` where ``column`` >= the cut-off (<= with ``largest=False``), else ``<|bad|>``.

    Null and NaN scores are ``<|bad|>``. The series is named :data:`LABEL_COLUMN`.
    """
    if column not in table.columns:
        raise ValueError(f"control tokens: column {column!r} is not in the table (columns: {table.columns})")
    cut = control_threshold(table[column], threshold, quantile)
    scores = table[column].cast(pl.Float64).fill_nan(None)
    good = (scores >= cut) if largest else (scores <= cut)
    return pl.Series(
        LABEL_COLUMN, [GOOD if g else BAD for g in good.fill_null(False).to_list()], dtype=pl.Utf8
    )


def control_rows(
    selected: pl.DataFrame,
    column: str,
    threshold: float | None = None,
    quantile: float | None = None,
    largest: bool = True,
    held_out_ids: Collection[str] = (),
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """``(training table, counts)`` from a selection table (the select stage's ``all.parquet``).

    Every row except those dedup dropped (``dropped_by`` starting with ``dedup``) and those whose
    ``id`` is in ``held_out_ids`` (the export's test split), with :data:`LABEL_COLUMN` set by
    :func:`control_labels` -- the cut-off is taken over these rows -- and the selector's ``keep``
    renamed ``selected``. counts: rows_in, duplicates, held_out, rows, good, bad, null_scores,
    selected_good/selected_bad (how the selector's decision and the label agree), threshold.
    """
    if column not in selected.columns:
        raise ValueError(f"control tokens: column {column!r} is not in the selection table: score it first")
    dup = (
        selected["dropped_by"].fill_null("").str.starts_with("dedup")
        if "dropped_by" in selected.columns
        else pl.Series([False] * selected.height)
    )
    held = selected["id"].is_in(list(held_out_ids)) if held_out_ids else pl.Series([False] * selected.height)
    rows = selected.filter(~dup & ~held)
    if rows.is_empty():
        raise ValueError(
            "control tokens: no rows left to train on after dropping duplicates and the test split"
        )
    cut = control_threshold(rows[column], threshold, quantile)
    labels = control_labels(rows, column, threshold=cut, largest=largest)
    kept = rows["keep"] if "keep" in rows.columns else pl.Series([None] * rows.height, dtype=pl.Boolean)
    table = rows.drop([c for c in _SELECTION_COLUMNS if c in rows.columns]).with_columns(
        labels, kept.alias("selected")
    )
    good = labels == GOOD
    counts = {
        "rows_in": selected.height,
        "duplicates": int(dup.sum()),
        "held_out": int((held & ~dup).sum()),
        "rows": table.height,
        "good": int(good.sum()),
        "bad": int((~good).sum()),
        "null_scores": int(rows[column].cast(pl.Float64).fill_nan(None).null_count()),
        "selected_good": int((good & kept.fill_null(False)).sum()),
        "selected_bad": int((~good & kept.fill_null(False)).sum()),
        "threshold": cut,
    }
    return table, counts


def write_control_rows(
    selected_path: str | Path,
    out_path: str | Path,
    held_out: str | Path | None = None,
    *,
    column: str,
    threshold: float | None = None,
    quantile: float | None = None,
    largest: bool = True,
) -> dict[str, Any]:
    """:func:`control_rows` of the selection table at ``selected_path``, written atomically to
    ``out_path`` (Parquet); ``held_out``: the export's test-split shards, whose ids are left out.
    Returns the counts."""
    from pipelines.shards import atomic_write_parquet, read_shards

    held_ids = read_shards(Path(held_out))["id"].to_list() if held_out else ()
    table, counts = control_rows(
        pl.read_parquet(selected_path), column, threshold, quantile, largest, held_out_ids=held_ids
    )
    atomic_write_parquet(table, Path(out_path))
    return {**counts, "path": str(out_path)}


# --------------------------------------------------------------------------- prompts
def row_control_token(row: Mapping[str, Any]) -> str:
    """The row's label (top-level :data:`LABEL_COLUMN`, or under ``meta`` after a file round trip)."""
    token = row.get(LABEL_COLUMN)
    if token is None:
        token = meta_of(row.get("meta")).get(LABEL_COLUMN)
    if token not in CONTROL_TOKENS:
        raise ValueError(
            f"row {row.get('id', '?')}: field {LABEL_COLUMN!r} is {token!r}, expected one of "
            f"{list(CONTROL_TOKENS)} (label rows with pipelines.finetune.control.control_rows)"
        )
    return token


# Training: each row's own label. Evaluation/inference: <|good|> for every row.
CONTROL_TAG = PromptTag("control_tokens", CONTROL_TOKENS, "prefix", row_control_token)
GOOD_TAG = PromptTag("control_tokens", CONTROL_TOKENS, "prefix", lambda row: GOOD)


def prompt_good(messages: Sequence[Mapping[str, str]]) -> list[dict]:
    """The inference prompt of a model trained with control tokens: ``<|good|>`` starts the last user
    message, exactly where training put the labels."""
    return mark(messages, GOOD, "prefix")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(
        prog="python -m pipelines.finetune.control",
        description="Label every row of a selection table <|good|>/<|bad|> by a score (see the module doc).",
    )
    ap.add_argument("selected", help="the select stage's table (selected/all.parquet) or any scored Parquet")
    ap.add_argument("out", help="Parquet file to write: the rows to train on, with a control_token column")
    ap.add_argument("--column", required=True, help="score column, e.g. score_judge")
    cut = ap.add_mutually_exclusive_group(required=True)
    cut.add_argument("--threshold", type=float, help="good: column >= this value")
    cut.add_argument("--quantile", type=float, help="good: column >= this quantile (0..1) of the scores")
    ap.add_argument("--smaller-is-better", action="store_true", help="good: column <= the cut-off")
    ap.add_argument(
        "--held-out", default=None, help="Parquet shard folder whose ids are left out (a test split)"
    )
    args = ap.parse_args(argv)
    counts = write_control_rows(
        args.selected,
        args.out,
        args.held_out,
        column=args.column,
        threshold=args.threshold,
        quantile=args.quantile,
        largest=not args.smaller_is_better,
    )
    print(json.dumps(counts, indent=2))
    return counts


if __name__ == "__main__":
    main()
