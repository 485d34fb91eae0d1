"""filter: drop the rows a user's row filter rejected (select.custom, instruct_selectors.row_filters)."""

from __future__ import annotations

import numpy as np
from instruct_selectors.steps.base import Compact, Result, SelectionStep


class Filter(SelectionStep):
    """Drop rows a user's row filter rejected (select.custom): ``column`` holds the reason, which
    becomes the row's dropped_by."""

    name = "filter"
    phase = 0
    column: str = "filtered_by"

    def apply(self, at: int, c: Compact, rows: np.ndarray, res: Result) -> tuple[np.ndarray, str]:
        reasons = self.marks(c, "name the row filters in select.custom").to_list()
        out = np.array([bool(reasons[r]) for r in rows], dtype=bool)
        for r in rows[out]:
            res.drop(r, reasons[r])
        return rows[~out], f"filtered={int(out.sum())}"
