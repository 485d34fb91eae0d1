"""top_k: keep the k best rows by a score, or by the reciprocal rank fusion of several scores
(Cormack et al. 2009), ranked among the rows entering the step."""

from __future__ import annotations

import numpy as np
import polars as pl
from instruct_selectors.steps.base import Compact, CountStep, Result, column_values, ranked
from pydantic import Field, model_validator


def ranks(score) -> np.ndarray:
    """1-based rank of each value, largest first; equal values share the best rank, so the ranks
    do not depend on the row order; NaN ranks last (rank n)."""
    s = np.asarray(score, dtype=np.float64)
    nan = np.isnan(s)
    rank = np.searchsorted(np.sort(-s[~nan]), -s, side="left").astype(np.float64) + 1
    return np.where(nan, float(s.size), rank)


def reciprocal_rank_fusion(*scores, k: float = 60.0) -> np.ndarray:
    """RRF: sum over the scores of 1 / (k + rank) (Cormack et al. 2009's k = 60)."""
    if not scores:
        raise ValueError("rank fusion needs at least one score")
    return sum(1.0 / (k + ranks(s)) for s in scores)


class TopK(CountStep):
    """Keep the k rows with the largest ``column`` (smallest when largest=False), globally; or, with
    ``fuse`` (two or more columns), the k best by reciprocal rank fusion: each column ranks the rows
    entering the step, largest first, and a row scores sum 1 / (rrf_k + rank) (Cormack et al. 2009)."""

    name = "top_k"
    phase = 2
    column: str | None = None
    fuse: tuple[str, ...] = ()
    rrf_k: float = Field(60.0, gt=0.0)
    largest: bool = True

    @model_validator(mode="after")
    def _column_or_fuse(self):
        if (self.column is None) == (not self.fuse):
            raise ValueError("give either column or fuse (a list of columns), not both")
        if self.fuse and len(self.fuse) < 2:
            raise ValueError("fuse needs two or more columns (one column: use column)")
        if self.fuse and not self.largest:
            raise ValueError("fuse ranks every column largest first: largest=False does not apply")
        return self

    def reads(self) -> tuple[str, ...]:
        return self.fuse or super().reads()

    def label(self) -> str:
        by = f"rrf({', '.join(self.fuse)})" if self.fuse else self.column
        return f"{self.name}({by}, {self.count_label()}{'' if self.largest else ', smallest'})"

    def values(self, table: pl.DataFrame, rows: np.ndarray) -> np.ndarray:
        """What it ranks by, for every row of ``table``: its column, or with ``fuse`` the reciprocal
        rank fusion of the columns over ``rows`` (the rows entering the step; NaN elsewhere)."""
        if not self.fuse:
            return column_values(table, self.column, self.label())
        at = np.asarray(rows, dtype=np.int64)
        fused = reciprocal_rank_fusion(*(column_values(table, c, self.label())[at] for c in self.fuse), k=self.rrf_k)
        out = np.full(table.height, np.nan)
        out[at] = fused
        return out

    def apply(self, at: int, c: Compact, rows: np.ndarray, res: Result) -> tuple[np.ndarray, str]:
        k = self.count(rows.size)
        return ranked(rows, self.values(c.table, rows), c.id_rank, self.largest)[:k], f"k={k}"
