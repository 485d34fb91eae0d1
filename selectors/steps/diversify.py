"""diversify: k spread-out rows by their embeddings (instruct_selectors.diversity): k-center greedy
from the best-ranked row, or round-robin over k-means clusters."""

from __future__ import annotations

from typing import Literal

import numpy as np
from instruct_selectors.diversity import cluster_stratified, embedding_matrix, k_center_greedy
from instruct_selectors.steps.base import Compact, CountStep, Result
from pydantic import Field


class Diversify(CountStep):
    """Keep k spread-out rows: k-center greedy from the best-ranked row, or round-robin over k-means clusters."""

    name = "diversify"
    phase = 3
    method: Literal["k_center", "cluster"] = "k_center"
    column: str = "embedding"
    n_clusters: int = Field(8, ge=1)
    seed: int = 0
    normalise: bool = True

    def label(self) -> str:
        return f"{self.name}({self.method}, {self.count_label()})"

    def apply(self, at: int, c: Compact, rows: np.ndarray, res: Result) -> tuple[np.ndarray, str]:
        k = self.count(rows.size)
        if not rows.size:
            return rows, "k=0"
        x = embedding_matrix(c.load(rows, self.column), self.column)
        if self.method == "k_center":
            picked = k_center_greedy(x, k, normalise=self.normalise)
        else:
            picked = cluster_stratified(x, k, n_clusters=self.n_clusters, seed=self.seed, normalise=self.normalise)
        return rows[np.asarray(picked, dtype=np.int64)], f"k={k} method={self.method}"
