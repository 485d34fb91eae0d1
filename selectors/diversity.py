"""Diversity: pick k spread-out rows from embeddings (k-center greedy or cluster-stratified sampling).

    from instruct_selectors.diversity import k_center_greedy, cluster_stratified
    picked = k_center_greedy(X, k)            # indices into X, in pick order
    picked = cluster_stratified(X, k, n_clusters=8, seed=0)

Embeddings are the backend's mean-pooled last hidden states (``score.score_table(...,
scores=(..., "embedding"))``), so no extra model is needed. Both functions take the candidates in
*rank order* (best first, as the ranking steps left them) and prefer earlier rows on ties:
k-center starts from the top-ranked row, and each cluster gives up its best-ranked rows first.
Vectors are L2-normalised by default, so distances are cosine-like.
"""

from __future__ import annotations

import numpy as np
import polars as pl


def embedding_matrix(table: pl.DataFrame, column: str = "embedding") -> np.ndarray:
    """The ``column`` of list[float] as an (n, d) float32 array; a clear error when it is missing."""
    if column not in table.columns:
        raise ValueError(f"column {column!r} is missing: score with scores=(..., 'embedding') first")
    values = table[column].to_list()
    if any(v is None for v in values):
        raise ValueError(f"column {column!r} has null rows: every candidate needs an embedding")
    return np.asarray(values, dtype=np.float32).reshape(len(values), -1)


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def k_center_greedy(x: np.ndarray, k: int, normalise: bool = True) -> list[int]:
    """Greedy 2-approximation of k-center: start at row 0, then repeatedly take the farthest row.

    Ties go to the lowest index (the better-ranked row). Returns at most ``len(x)`` indices.
    """
    n = len(x)
    k = min(k, n)
    if k <= 0:
        return []
    x = _normalise(x) if normalise else np.asarray(x, dtype=np.float64)
    picked = [0]
    dist = np.linalg.norm(x - x[0], axis=1)
    while len(picked) < k:
        i = int(np.argmax(dist))  # argmax returns the first maximum: the better-ranked row
        picked.append(i)
        dist = np.minimum(dist, np.linalg.norm(x - x[i], axis=1))
        dist[picked] = -1.0  # already picked (duplicates of a pick have distance 0 anyway)
    return picked


def cluster_stratified(
    x: np.ndarray, k: int, n_clusters: int = 8, seed: int = 0, normalise: bool = True
) -> list[int]:
    """K-means the rows, then take rows round-robin over clusters, best-ranked first within each.

    Every cluster gets an equal share (capped by its size), so small clusters are not swamped
    by large ones.
    """
    from sklearn.cluster import KMeans

    n = len(x)
    k = min(k, n)
    if k <= 0:
        return []
    x = _normalise(x) if normalise else np.asarray(x, dtype=np.float64)
    n_clusters = max(1, min(n_clusters, n))
    labels = KMeans(n_clusters=n_clusters, n_init=4, random_state=seed).fit_predict(x)
    queues = [list(np.flatnonzero(labels == c)) for c in range(n_clusters)]  # ascending = rank order
    # Clusters visited in the order of their best-ranked row, so the top row is always picked first.
    queues = sorted((q for q in queues if q), key=lambda q: q[0])
    picked: list[int] = []
    while len(picked) < k:
        for q in queues:
            if q and len(picked) < k:
                picked.append(int(q.pop(0)))
    return picked
