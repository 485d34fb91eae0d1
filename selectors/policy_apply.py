"""What one selection step does to the rows entering it (the reference, on Python lists):
rows in, rows kept in their new rank order, a reason for each dropped row, a detail string.

    from instruct_selectors.policy_apply import apply_step
    kept, reasons, detail = apply_step(step, table, rows, ids, dup_of)

:func:`instruct_selectors.policies.select` runs the steps one after another; ``compact_select.py``
makes the same decisions on numpy arrays.
"""

from __future__ import annotations

import hashlib

import numpy as np
import polars as pl
from instruct_selectors.color_filter import color_k
from instruct_selectors.dedup import DedupState, decide, dedup_state, row_texts
from instruct_selectors.diversity import cluster_stratified, embedding_matrix, k_center_greedy
from instruct_selectors.policy_steps import (
    Decontaminate,
    Dedup,
    Diversify,
    Filter,
    Quota,
    Ratio,
    SelectionStep,
    Threshold,
    TopK,
    label,
)

from pipelines.schema import meta_field

# ---- helpers -------------------------------------------------------------------------------------


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



def column_values(table: pl.DataFrame, column: str, step_name: str) -> np.ndarray:
    """``column`` as floats, nulls as NaN; ValueError naming ``step_name`` when it is missing."""
    if column not in table.columns:
        raise ValueError(
            f"{step_name}: column {column!r} is not in the table (columns: {', '.join(table.columns)})"
        )
    return table[column].cast(pl.Float64).fill_null(np.nan).to_numpy()


def top_k_values(table: pl.DataFrame, step: TopK, rows, step_name: str) -> np.ndarray:
    """What a top_k ranks by, for every row of ``table``: its column, or with ``fuse`` the
    reciprocal rank fusion of the columns over ``rows`` (the rows entering the step; NaN elsewhere)."""
    if not step.fuse:
        return column_values(table, step.column, step_name)
    at = np.asarray(rows, dtype=np.int64)
    fused = reciprocal_rank_fusion(*(column_values(table, c, step_name)[at] for c in step.fuse), k=step.rrf_k)
    out = np.full(table.height, np.nan)
    out[at] = fused
    return out


def _ranked(rows: list[int], values: np.ndarray, ids: list[str], largest: bool) -> list[int]:
    """Rows by value (best first), ties by id, NaN last."""
    sign = -1.0 if largest else 1.0
    return sorted(
        rows,
        key=lambda i: (np.isnan(values[i]), sign * values[i] if not np.isnan(values[i]) else 0.0, ids[i]),
    )


def _random_order(rows: list[int], ids: list[str], seed: int) -> list[int]:
    """A seeded shuffle that depends only on the ids, not on the row order."""

    def key(i: int) -> bytes:
        return hashlib.blake2b(f"{seed}\x1f{ids[i]}".encode(), digest_size=8).digest()

    return sorted(rows, key=lambda i: (key(i), ids[i]))


def _strata(table: pl.DataFrame, field: str) -> list[str | None]:
    if field in table.columns:
        return [None if v is None else str(v) for v in table[field].to_list()]
    return meta_field(table, field).to_list()


# ---- one step ------------------------------------------------------------------------------------


def apply_step(
    step: SelectionStep, table: pl.DataFrame, rows: list[int], ids: list[str], dup_of: list,
    state: DedupState | None = None,
) -> tuple[list[int], dict[int, str], str]:
    """(kept rows in their new rank order, {dropped row: reason override}, detail for the summary)."""
    name = label(step)
    if isinstance(step, Decontaminate):
        if step.column not in table.columns:
            raise ValueError(f"{name}: column {step.column!r} is not in the table: set "
                             "select.decontaminate.against to the eval sets to check against")
        marked = table[step.column].to_list()
        kept = [r for r in rows if not marked[r]]
        return kept, {}, f"contaminated={len(rows) - len(kept)}"

    if isinstance(step, Filter):
        if step.column not in table.columns:
            raise ValueError(f"{name}: column {step.column!r} is not in the table: name the row filters "
                             "in select.custom")
        reason = table[step.column].to_list()
        kept = [r for r in rows if not reason[r]]
        return kept, {r: reason[r] for r in rows if reason[r]}, f"filtered={len(rows) - len(kept)}"

    if isinstance(step, Dedup):
        if state is None:  # in memory: the rows entering, from the table
            state = dedup_state(row_texts(table[rows], step.fields), near_threshold=step.near_threshold,
                                num_perm=step.num_perm, ngram=step.ngram)
            at, sub_ids = np.arange(len(rows)), [ids[r] for r in rows]
        else:  # precomputed for every table row (stream_select)
            at, sub_ids = np.asarray(rows, dtype=np.int64), ids
        kind, of = decide(state, sub_ids, at, exact=step.exact, near=step.near,
                          near_threshold=step.near_threshold)
        reasons = {}
        for r, k, o in zip(rows, kind, of, strict=True):
            if k is not None:
                reasons[r], dup_of[r] = f"dedup.{k}", o
        kept = [r for r in rows if r not in reasons]
        detail = f"exact={sum(k == 'exact' for k in kind)} near={sum(k == 'near' for k in kind)}"
        return kept, reasons, detail

    if isinstance(step, Threshold):
        v = column_values(table, step.column, name)
        cand = v[rows] if rows else np.array([])
        finite = cand[~np.isnan(cand)]
        lo = (
            step.min
            if step.min is not None
            else (
                float(np.quantile(finite, step.min_quantile))
                if step.min_quantile is not None and finite.size
                else None
            )
        )
        hi = (
            step.max
            if step.max is not None
            else (
                float(np.quantile(finite, step.max_quantile))
                if step.max_quantile is not None and finite.size
                else None
            )
        )

        def ok(i: int) -> bool:
            if np.isnan(v[i]):
                return step.keep_null
            return (lo is None or v[i] >= lo) and (hi is None or v[i] <= hi)

        return [r for r in rows if ok(r)], {}, f"bounds=[{lo}, {hi}]"

    if isinstance(step, TopK):
        v = top_k_values(table, step, rows, name)
        k = step.count(len(rows))
        return _ranked(rows, v, ids, step.largest)[:k], {}, f"k={k}"

    if isinstance(step, Ratio):
        k = step.count(len(rows))
        chosen = set(_random_order(rows, ids, step.seed)[:k])
        return [r for r in rows if r in chosen], {}, f"k={k}"  # keep the incoming rank order

    if isinstance(step, Quota):
        strata = _strata(table, step.field)
        v = column_values(table, step.column, name) if step.column else None
        groups: dict[str | None, list[int]] = {s: [] for s in step.strata}
        for r in rows:
            groups.setdefault(strata[r], []).append(r)
        chosen: set[int] = set()
        counts = []
        for s in sorted(groups, key=lambda s: (s is None, s or "")):
            members = groups[s]
            k = (
                step.per_stratum
                if step.per_stratum is not None
                else color_k(len(members), fraction=step.fraction)
            )
            if v is not None:
                order = _ranked(members, v, ids, step.largest)
            else:
                order = _random_order(members, ids, step.seed) if step.random else members
            picked = order[:k]
            chosen.update(picked)
            counts.append(f"{s}={len(picked)}/{len(members)}")
        kept = [r for r in rows if r in chosen]
        if v is not None:
            kept = _ranked(kept, v, ids, step.largest)
        return kept, {}, " ".join(counts)

    if isinstance(step, Diversify):
        k = step.count(len(rows))
        if not rows:
            return [], {}, "k=0"
        x = embedding_matrix(table[rows], step.column)
        if step.method == "k_center":
            picked = k_center_greedy(x, k, normalise=step.normalise)
        else:
            picked = cluster_stratified(
                x, k, n_clusters=step.n_clusters, seed=step.seed, normalise=step.normalise
            )
        return [rows[j] for j in picked], {}, f"k={k} method={step.method}"
    raise TypeError(f"not a selection step: {step!r}")
