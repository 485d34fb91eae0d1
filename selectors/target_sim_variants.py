"""Variants of target similarity measured by ``benchmarks.selection`` (issue 22): pure array functions.

Each is an arm of the benchmark. Two reached the pipeline by beating the others across targets:
RDS+'s pooling (``score.options.target_sim.pooling = "weighted"``, computed in pipelines/llm/nll.py) and the rank
fusion (a ``top_k`` step's ``fuse``: ``reciprocal_rank_fusion`` in steps/top_k.py).

* RDS+'s own pooling (Ivison et al. 2025, arXiv 2503.01807): a *position-weighted* mean of the last
  hidden state over the whole sequence (prompt and response), weight of token i (1-based) =
  i / sum(1..L) (SGPT's weighted mean: later tokens have seen more of the row)
  -- :func:`position_weights`, :func:`position_weight_matrix`, :func:`weighted_mean_pool`.
* Answer-form awareness: a long-answer target should not pull 3-token rows.
  :func:`length_penalised` = z(sim) - strength * |log(len_row / median len_target)| (z over the pool,
  so ``strength`` is in standard deviations of similarity per e-fold of length ratio);
  :func:`length_matched_top` picks the top rows by similarity *within* response-length bins, with
  quotas following the target's own response-length distribution.
* Redundant representations (CRDS, arXiv 2602.13773): CRDS-W whitens the embeddings (PCA whitening
  fitted on the pool, :func:`fit_whitening` / :func:`apply_whitening`; with all kept components its
  cosines equal ZCA's, a rotation away), CRDS-R projects concatenated layers' embeddings with a
  Rademacher matrix (:func:`rademacher_projection`).
* TSDS-like diversity (arXiv 2410.11303): :func:`knn_density` (mean cosine to the k nearest other
  pool rows) as a penalty on crowded regions, :func:`density_penalised`.

Scores follow the pipeline's convention: larger is better, NaN ranks last.
"""

from __future__ import annotations

import numpy as np
from instruct_selectors.target_sim import target_sim_score, target_vector


def _unit(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float64)
    norms = np.linalg.norm(rows, axis=-1, keepdims=True)
    return rows / np.where(norms > 0, norms, 1.0)


def position_weights(n: int) -> np.ndarray:
    """RDS+/SGPT weights for a sequence of ``n`` tokens: i / sum(1..n), i = 1..n (sums to 1)."""
    if n < 1:
        raise ValueError(f"a sequence needs at least one token, got {n}")
    i = np.arange(1, n + 1, dtype=np.float64)
    return i / i.sum()


def position_weight_matrix(lengths, width: int) -> np.ndarray:
    """(batch, width) weights: row b holds :func:`position_weights` of its first ``lengths[b]``
    positions and 0 over the right padding."""
    lengths = np.asarray(lengths, dtype=int)
    if (lengths < 1).any() or (lengths > width).any():
        raise ValueError(f"lengths {lengths.tolist()} do not fit a width of {width}")
    w = np.zeros((len(lengths), width))
    for b, n in enumerate(lengths):
        w[b, :n] = position_weights(int(n))
    return w


def weighted_mean_pool(hidden: np.ndarray, lengths) -> np.ndarray:
    """Position-weighted mean over each row's first ``lengths[b]`` positions (right padding ignored).

    ``hidden``: (batch, seq, dim) (or (batch, layers, seq, dim): every layer pooled alike);
    returns (batch, dim) (or (batch, layers, dim))."""
    h = np.asarray(hidden, dtype=np.float64)
    if len(lengths) != h.shape[0]:
        raise ValueError(f"{len(lengths)} lengths for {h.shape[0]} rows")
    w = position_weight_matrix(lengths, h.shape[-2])
    if h.ndim == 3:
        return np.einsum("bt,btd->bd", w, h)
    return np.einsum("bt,bltd->bld", w, h)


def _z(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    sd = np.nanstd(x)
    return (x - np.nanmean(x)) / (sd if sd > 0 else 1.0)


def length_penalised(sim, row_len, target_len, strength: float = 0.5) -> np.ndarray:
    """z(sim) - strength * |log(row_len / median(target_len))| (lengths in response tokens, >= 1)."""
    row = np.maximum(np.asarray(row_len, dtype=np.float64), 1.0)
    med = max(float(np.median(np.asarray(target_len, dtype=np.float64))), 1.0)
    return _z(sim) - strength * np.abs(np.log(row / med))


def length_matched_top(sim, row_len, target_len, k: int, bins: int = 4) -> np.ndarray:
    """A score whose top ``k`` are the rows picked to match the target's response-length distribution.

    Bins: quantiles of the target's log lengths (``bins`` of them; rows beyond the ends go to the end
    bins). Bin b gets round(k x the target's share in b) rows, the most similar of the pool's rows
    in b; a bin with too few rows leaves its shortfall to the most similar rows left anywhere.
    Returned: sim + 3 for picked rows, sim for the rest (cosines lie in [-1, 1]), NaN where sim is."""
    sim = np.asarray(sim, dtype=np.float64)
    row = np.log(np.maximum(np.asarray(row_len, dtype=np.float64), 1.0))
    tgt = np.log(np.maximum(np.asarray(target_len, dtype=np.float64), 1.0))
    edges = np.unique(np.quantile(tgt, np.linspace(0, 1, bins + 1))[1:-1])
    row_bin, tgt_bin = np.searchsorted(edges, row, side="right"), np.searchsorted(edges, tgt, side="right")
    share = np.bincount(tgt_bin, minlength=len(edges) + 1) / len(tgt)
    quota = np.floor(share * k + 0.5).astype(int)
    ok = np.isfinite(sim)
    order = np.lexsort((np.arange(len(sim)), -np.where(ok, sim, -np.inf)))  # most similar first, stable
    picked = np.zeros(len(sim), dtype=bool)
    for b, q in enumerate(quota):
        in_bin = [i for i in order if ok[i] and row_bin[i] == b][:q]
        picked[in_bin] = True
    rest = [i for i in order if ok[i] and not picked[i]]
    picked[rest[: max(0, k - int(picked.sum()))]] = True
    while picked.sum() > k:  # rounding gave the bins one row too many: drop the least similar pick
        picked[max(np.flatnonzero(picked), key=lambda i: (-sim[i], -i))] = False
    return np.where(ok, sim + 3.0 * picked, np.nan)


def fit_whitening(pool: np.ndarray, dim: int | None = None, eps: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """PCA whitening fitted on the pool: (mean, W) with (x - mean) @ W having identity covariance
    over the pool in its top ``dim`` components (default: all with variance above ``eps`` x the top)."""
    x = np.asarray(pool, dtype=np.float64)
    mean = x.mean(axis=0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    var = s**2 / max(len(x) - 1, 1)
    keep = var > eps * var[0] if len(var) and var[0] > 0 else np.zeros(len(var), dtype=bool)
    r = int(keep.sum()) if dim is None else min(int(dim), int(keep.sum()))
    if r < 1:
        raise ValueError("the pool's embeddings have no variance to whiten")
    return mean, vt[:r].T / np.sqrt(var[:r])


def apply_whitening(x: np.ndarray, mean: np.ndarray, w: np.ndarray) -> np.ndarray:
    return (np.asarray(x, dtype=np.float64) - mean) @ w


def rademacher_projection(dim_in: int, dim_out: int, seed: int = 0) -> np.ndarray:
    """A (dim_in, dim_out) matrix of +-1/sqrt(dim_out) (Achlioptas): preserves inner products in expectation."""
    signs = np.random.default_rng(seed).integers(0, 2, size=(dim_in, dim_out)) * 2 - 1
    return signs / np.sqrt(dim_out)


def target_sim_in(pool: np.ndarray, target: np.ndarray) -> np.ndarray:
    """target_sim.py's score (cosine with the mean of the target's unit rows) in any representation."""
    return target_sim_score(np.asarray(pool, dtype=np.float64), target_vector(np.asarray(target, dtype=np.float64)))


def knn_density(embeddings: np.ndarray, k: int = 10) -> np.ndarray:
    """Mean cosine of each row with its k nearest *other* rows (high: a crowded region of the pool)."""
    u = _unit(embeddings)
    n = len(u)
    if n < 2:
        return np.zeros(n)
    k = min(k, n - 1)
    sims = u @ u.T
    np.fill_diagonal(sims, -np.inf)
    return np.sort(sims, axis=1)[:, -k:].mean(axis=1)


def density_penalised(sim, density, strength: float = 0.5) -> np.ndarray:
    """z(sim) - strength * z(density): near the target, but not where the pool already floods."""
    return _z(sim) - strength * _z(density)
