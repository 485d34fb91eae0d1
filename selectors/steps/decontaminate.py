"""decontaminate: drop rows that share a word n-gram with an eval set (instruct_selectors.decontam
marks them in ``contaminated_by`` as each shard is read)."""

from __future__ import annotations

import numpy as np
import polars as pl
from instruct_selectors.steps.base import Compact, Result, SelectionStep


def truthy(s: pl.Series) -> np.ndarray:
    """``bool(value)`` of each entry: a non-empty string, true, a non-zero number."""
    if s.dtype == pl.Utf8:
        return (s.is_not_null() & (s.str.len_bytes() > 0)).to_numpy()
    if s.dtype == pl.Boolean:
        return s.fill_null(False).to_numpy()
    if s.dtype.is_numeric():
        return (s.is_not_null() & (s != 0).fill_null(False)).to_numpy()
    return np.array([bool(x) for x in s.to_list()], dtype=bool)


class Decontaminate(SelectionStep):
    """Drop rows that share a word n-gram with an eval set: ``column`` (decontam.mark) is set."""

    name = "decontaminate"
    phase = 0
    column: str = "contaminated_by"

    def apply(self, at: int, c: Compact, rows: np.ndarray, res: Result) -> tuple[np.ndarray, str]:
        marked = truthy(self.marks(c, "set select.decontaminate.against to the eval sets to check against"))[rows]
        return rows[~marked], f"contaminated={int(marked.sum())}"
