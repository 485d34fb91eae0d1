"""threshold: keep the rows whose score lies within bounds, given as values or as quantiles of the
rows entering the step."""

from __future__ import annotations

import numpy as np
from instruct_selectors.steps.base import Compact, Fraction, Result, SelectionStep, column_values
from pydantic import model_validator


class Threshold(SelectionStep):
    """Keep rows whose ``column`` lies within the bounds (inclusive); null scores fail unless keep_null."""

    name = "threshold"
    phase = 1
    column: str
    min: float | None = None
    max: float | None = None
    min_quantile: Fraction | None = None
    max_quantile: Fraction | None = None
    keep_null: bool = False

    @model_validator(mode="after")
    def _one_bound(self):
        if self.min is None and self.max is None and self.min_quantile is None and self.max_quantile is None:
            raise ValueError("give at least one of min, max, min_quantile, max_quantile")
        if (self.min is not None and self.min_quantile is not None) or (
            self.max is not None and self.max_quantile is not None
        ):
            raise ValueError("give a lower (upper) bound either as a value or as a quantile, not both")
        return self

    def label(self) -> str:
        parts = [
            f"{self.column}>={self.min}" if self.min is not None else None,
            f"{self.column}<={self.max}" if self.max is not None else None,
            f"{self.column}>=q{self.min_quantile}" if self.min_quantile is not None else None,
            f"{self.column}<=q{self.max_quantile}" if self.max_quantile is not None else None,
        ]
        return f"{self.name}({', '.join(p for p in parts if p)})"

    def apply(self, at: int, c: Compact, rows: np.ndarray, res: Result) -> tuple[np.ndarray, str]:
        cand = column_values(c.table, self.column, self.label())[rows]
        finite = cand[~np.isnan(cand)]

        def bound(value: float | None, quantile: float | None) -> float | None:
            if value is not None:
                return value
            return float(np.quantile(finite, quantile)) if quantile is not None and finite.size else None

        lo, hi = bound(self.min, self.min_quantile), bound(self.max, self.max_quantile)
        ok = np.ones(rows.size, dtype=bool)
        with np.errstate(invalid="ignore"):
            if lo is not None:
                ok &= cand >= lo
            if hi is not None:
                ok &= cand <= hi
        ok = np.where(np.isnan(cand), self.keep_null, ok)
        return rows[ok], f"bounds=[{lo}, {hi}]"
