"""ratio: a seeded random share of the rows entering (the random baseline): the same seed keeps
the same rows whatever their order, since the draw hashes each id (stream_select's random keys)."""

from __future__ import annotations

import numpy as np
from instruct_selectors.steps.base import Compact, CountStep, Result


class Ratio(CountStep):
    """Keep a seeded random k / fraction of the rows (the random baseline); same seed, same rows."""

    name = "ratio"
    phase = 2
    seed: int = 0

    def label(self) -> str:
        return f"{self.name}({self.count_label()}, seed={self.seed})"

    def apply(self, at: int, c: Compact, rows: np.ndarray, res: Result) -> tuple[np.ndarray, str]:
        k = self.count(rows.size)
        chosen = np.zeros(rows.size, dtype=bool)
        chosen[np.lexsort((np.arange(rows.size), c.id_rank[rows], c.random_keys[at][rows]))[:k]] = True
        return rows[chosen], f"k={k}"  # keep the incoming rank order
