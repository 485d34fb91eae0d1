"""dedup: drop exact (normalised hash) and near (MinHash LSH) duplicates, keeping the first of each
group; the hashes are computed shard by shard in stream_select's first pass (instruct_selectors.dedup)."""

from __future__ import annotations

import numpy as np
from instruct_selectors.dedup import TEXT_FIELDS, decide_arrays
from instruct_selectors.steps.base import Compact, Result, SelectionStep
from pydantic import Field


class Dedup(SelectionStep):
    """Drop exact (normalised hash) and near (MinHash LSH) duplicates, keeping the first of each group."""

    name = "dedup"
    phase = 0
    exact: bool = True
    near: bool = True
    near_threshold: float = Field(0.8, gt=0.0, le=1.0, description="estimated Jaccard of word 3-grams")
    num_perm: int = Field(128, ge=16)
    ngram: int = Field(3, ge=1)
    fields: tuple[str, ...] = TEXT_FIELDS
    same_context: bool = Field(True, description="near duplicates only among rows of the same context: tasks "
                               "about one passage differ by question and answer, which the passage would drown; "
                               "false: the fields' text as a whole")

    def apply(self, at: int, c: Compact, rows: np.ndarray, res: Result) -> tuple[np.ndarray, str]:
        kind, of = decide_arrays(c.dedup[at], rows, exact=self.exact, near=self.near,
                                 near_threshold=self.near_threshold)
        for k, reason in ((1, "dedup.exact"), (2, "dedup.near")):
            res.drop(rows[kind == k], reason)
        dup = kind > 0
        res.dup_of[rows[dup]] = of[dup]
        return rows[~dup], f"exact={int((kind == 1).sum())} near={int((kind == 2).sum())}"
