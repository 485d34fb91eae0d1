"""Context dependency: how much a response relies on the user's context (arXiv 2411.02688).

Two scores, both columns on the example table:

* ``score_ctx_attn``: the paper's user attention ratio, read from a probe chat model with eager
  attention at one layer (default about two thirds of its depth): for each response token the
  attention mass on user-content tokens, max over heads, mean over response tokens. The recipe
  lives in ``pipelines/llm/nll.py`` (``_attention_ratio``); score.py asks for it in the same
  forward pass as the prior's loss when the prior is the probe.
* ``score_ctx_loss = L(resp | instruction without context) - L(resp | instruction with context)``
  for rows with an explicit context; null otherwise. Positive: the context helps.

:func:`tag_context_dependent` thresholds either column (a value, or a quantile of the non-null
scores) and writes its own ``ctx_dependent`` column (true/false; null where the score is null),
which the fine-tuning stage reads to append the ``[IND]`` indicator. It never rewrites ``meta``:
a stage adds columns, it does not change another stage's.
"""

from __future__ import annotations

import numpy as np
import polars as pl

ATTN_COLUMN = "score_ctx_attn"
LOSS_COLUMN = "score_ctx_loss"
FLAG_COLUMN = "ctx_dependent"
PAPER_THRESHOLD = 0.6  # the paper's README; one of its recipes uses 0.8


def ctx_loss_score(loss_without_context: np.ndarray, loss_with_context: np.ndarray) -> np.ndarray:
    """Elementwise L(resp | no context) - L(resp | with context); NaN stays NaN (no context -> null)."""
    return np.asarray(loss_without_context, dtype=np.float64) - np.asarray(
        loss_with_context, dtype=np.float64
    )


def context_threshold(
    scores: pl.Series, threshold: float | None = None, quantile: float | None = None
) -> float:
    """The cut-off: ``threshold`` as given, or the ``quantile`` (0..1) of the non-null scores."""
    if (threshold is None) == (quantile is None):
        raise ValueError("give exactly one of threshold= or quantile=")
    if threshold is not None:
        return float(threshold)
    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f"quantile must be in [0, 1], got {quantile}")
    values = scores.fill_nan(None).drop_nulls()
    if values.is_empty():
        return float("inf")
    return float(np.quantile(values.to_numpy(), quantile))


def tag_context_dependent(
    table: pl.DataFrame,
    column: str = ATTN_COLUMN,
    threshold: float | None = None,
    quantile: float | None = None,
) -> pl.DataFrame:
    """Add the ``ctx_dependent`` column = (score >= cut-off); null where the score is null.

    With neither ``threshold`` nor ``quantile`` the paper's 0.6 is used (meant for the attention ratio).
    """
    if column not in table.columns:
        raise ValueError(f"column {column!r} is missing: score the table first (score.score_table)")
    if threshold is None and quantile is None:
        threshold = PAPER_THRESHOLD
    cut = context_threshold(table[column], threshold, quantile)
    flags = [
        None if v is None or np.isnan(v) else bool(v >= cut) for v in table[column].cast(pl.Float64).to_list()
    ]
    return table.with_columns(pl.Series(FLAG_COLUMN, flags, dtype=pl.Boolean))
