"""The row's mean-pooled last hidden state from the prior/full pass, for diversity (no extra pass)."""

import polars as pl
from instruct_selectors.scores.base import Score


def _compute(inputs):
    return pl.Series([h.tolist() for h in inputs.passes["prior/full"]["hidden"]], dtype=pl.List(pl.Float32))


EMBEDDING = Score(
    name="embedding", column="embedding", compute=_compute, passes=("prior/full",), extras=("hidden",),
    dtype=pl.List(pl.Float32), scalar=False,
    definition="the row's mean-pooled last hidden state (for diversity)",
)
