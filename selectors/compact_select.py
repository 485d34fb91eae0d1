"""The selection steps of :mod:`instruct_selectors.policies` on compact per-row arrays: the same
decisions as :func:`policies.select`, with numpy sorts instead of Python lists, sets and tuples.

    from instruct_selectors.compact_select import Compact, select_compact
    result, summary = select_compact(Compact(table, id_rank, ...), steps)

Used by :mod:`instruct_selectors.stream_select`, which builds the :class:`Compact` state shard by
shard. Per row it holds a few fixed-width numbers (no ids, no texts): the rank of the row's id
in string order (ties are broken by id, so that rank is all the sorts need), the score columns
the steps read, per-quota stratum codes, per-random-step hash keys and the dedup state (on disk).
:func:`policies.select` stays the reference; tests/test_stream_select.py checks both agree.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl
from instruct_selectors.color_filter import color_k
from instruct_selectors.dedup import DedupState, decide_arrays
from instruct_selectors.diversity import cluster_stratified, embedding_matrix, k_center_greedy
from instruct_selectors.policy_apply import column_values, top_k_values
from instruct_selectors.policy_steps import (
    Decontaminate,
    Dedup,
    Diversify,
    Filter,
    Quota,
    Ratio,
    Threshold,
    TopK,
    label,
)

NO_STEPS = "no steps"


@dataclass
class Strata:
    """One quota field's value per row as codes into ``names`` (-1: no value)."""

    codes: np.ndarray
    names: list[str]


@dataclass
class Compact:
    """Everything the steps decide from, one entry per row in table order.

    ``table``: the columns the steps read (scores, a quota column, the decontamination mark);
    ``id_rank``: int64, the row's id's position in string order (equal ids, equal rank);
    ``strata``: {step position: :class:`Strata`} for quotas on a meta field;
    ``random_keys``: {step position: uint64 seeded hash key of the id} for ratio / random quota;
    ``dedup``: {step position: :class:`DedupState`}; ``load(rows, column)``: that column of
    those rows (in that order), for diversify, which needs embeddings of the rows entering it."""

    table: pl.DataFrame
    id_rank: np.ndarray
    strata: dict[int, Strata] = field(default_factory=dict)
    random_keys: dict[int, np.ndarray] = field(default_factory=dict)
    dedup: dict[int, DedupState] = field(default_factory=dict)
    load: Callable[[np.ndarray, str], pl.DataFrame] | None = None


@dataclass
class Result:
    """Per row: ``dropped`` (-1 kept, else an index into ``labels``), ``rank`` (1-based position in
    the final order, 0 when dropped), ``dup_of`` (row index of the kept row it duplicates, -1)."""

    dropped: np.ndarray
    rank: np.ndarray
    dup_of: np.ndarray
    labels: list[str]
    last: str
    has_dedup: bool


def _ranked(rows: np.ndarray, v: np.ndarray, id_rank: np.ndarray, largest: bool) -> np.ndarray:
    """policy_apply._ranked: by value (best first), ties by id, NaN last; stable on the incoming order."""
    vals = v[rows]
    nan = np.isnan(vals)
    key = np.where(nan, 0.0, -vals if largest else vals)
    return rows[np.lexsort((np.arange(rows.size), id_rank[rows], key, nan))]


def _random_order(rows: np.ndarray, keys: np.ndarray, id_rank: np.ndarray) -> np.ndarray:
    """policy_apply._random_order: by the seeded hash of the id, then the id."""
    return rows[np.lexsort((np.arange(rows.size), id_rank[rows], keys[rows]))]


def _truthy(s: pl.Series) -> np.ndarray:
    """``bool(value)`` of each entry, as policy_apply's decontaminate step tests it."""
    if s.dtype == pl.Utf8:
        return (s.is_not_null() & (s.str.len_bytes() > 0)).to_numpy()
    if s.dtype == pl.Boolean:
        return s.fill_null(False).to_numpy()
    if s.dtype.is_numeric():
        return (s.is_not_null() & (s != 0).fill_null(False)).to_numpy()
    return np.array([bool(x) for x in s.to_list()], dtype=bool)


def _strata(c: Compact, step: Quota, at: int) -> Strata:
    if step.field in c.table.columns:  # a column (also one that ``finish`` added), as policy_apply._strata
        s = c.table[step.field]
        s = s if s.dtype == pl.Utf8 else pl.Series([None if v is None else str(v) for v in s.to_list()],
                                                   dtype=pl.Utf8)
        names = s.drop_nulls().unique().sort().to_list()
        codes = s.replace_strict(names, list(range(len(names))), default=-1, return_dtype=pl.Int64)
        return Strata(codes.to_numpy(), names)
    return c.strata[at]


def _quota(step: Quota, c: Compact, at: int, rows: np.ndarray, name: str) -> tuple[np.ndarray, str]:
    st = _strata(c, step, at)
    v = column_values(c.table, step.column, name) if step.column else None
    code = st.codes[rows]
    pos = np.arange(rows.size)
    if v is not None:
        vals = v[rows]
        nan = np.isnan(vals)
        within = (c.id_rank[rows], np.where(nan, 0.0, -vals if step.largest else vals), nan)
    elif step.random:
        within = (c.id_rank[rows], c.random_keys[at][rows])
    else:
        within = ()
    idx = np.lexsort((pos, *within, code))  # by stratum, then the stratum's own order
    sc = code[idx]
    start = np.ones(idx.size, dtype=bool)
    start[1:] = sc[1:] != sc[:-1]
    gstart = np.flatnonzero(start)
    size = np.diff(np.append(gstart, idx.size))
    gcode = sc[gstart]
    if step.per_stratum is not None:
        k = np.full(size.size, step.per_stratum, dtype=np.int64)
    else:
        k = np.array([color_k(int(n), fraction=step.fraction) for n in size], dtype=np.int64)
    nth = np.arange(idx.size) - np.repeat(gstart, size)
    chosen = np.zeros(rows.size, dtype=bool)
    chosen[idx[nth < np.repeat(k, size)]] = True
    counts: dict[str | None, str] = {}
    for gc, n, kk in zip(gcode.tolist(), size.tolist(), k.tolist(), strict=True):
        s = None if gc < 0 else st.names[gc]
        counts[s] = f"{s}={min(kk, n)}/{n}"
    for s in step.strata:
        if s not in counts:
            kk = step.per_stratum if step.per_stratum is not None else color_k(0, fraction=step.fraction)
            counts[s] = f"{s}={min(kk, 0)}/0"
    detail = " ".join(counts[s] for s in sorted(counts, key=lambda s: (s is None, s or "")))
    kept = rows[chosen]
    if v is not None:
        kept = _ranked(kept, v, c.id_rank, step.largest)
    return kept, detail


def _apply(step, at: int, c: Compact, rows: np.ndarray, res: Result, codes: dict[str, int]
           ) -> tuple[np.ndarray, str]:
    """(kept rows in their new rank order, detail); sets dedup reasons and dup_of in ``res``."""
    name = label(step)
    if isinstance(step, Decontaminate):
        if step.column not in c.table.columns:
            raise ValueError(f"{name}: column {step.column!r} is not in the table: set "
                             "select.decontaminate.against to the eval sets to check against")
        marked = _truthy(c.table[step.column])[rows]
        return rows[~marked], f"contaminated={int(marked.sum())}"
    if isinstance(step, Filter):  # a user's row filters: the reason is the row's dropped_by
        if step.column not in c.table.columns:
            raise ValueError(f"{name}: column {step.column!r} is not in the table: name the row filters "
                             "in select.custom")
        reasons = c.table[step.column].to_list()
        out = np.array([bool(reasons[r]) for r in rows], dtype=bool)
        for r in rows[out]:
            if reasons[r] not in codes:
                codes[reasons[r]] = len(res.labels)
                res.labels.append(reasons[r])
            res.dropped[r] = codes[reasons[r]]
        return rows[~out], f"filtered={int(out.sum())}"
    if isinstance(step, Dedup):
        kind, of = decide_arrays(c.dedup[at], rows, exact=step.exact, near=step.near,
                                 near_threshold=step.near_threshold)
        for k, reason in ((1, "dedup.exact"), (2, "dedup.near")):
            res.dropped[rows[kind == k]] = codes[reason]
        dup = kind > 0
        res.dup_of[rows[dup]] = of[dup]
        return rows[~dup], f"exact={int((kind == 1).sum())} near={int((kind == 2).sum())}"
    if isinstance(step, Threshold):
        v = column_values(c.table, step.column, name)
        cand = v[rows]
        finite = cand[~np.isnan(cand)]
        lo = (step.min if step.min is not None else
              float(np.quantile(finite, step.min_quantile)) if step.min_quantile is not None and finite.size
              else None)
        hi = (step.max if step.max is not None else
              float(np.quantile(finite, step.max_quantile)) if step.max_quantile is not None and finite.size
              else None)
        nan = np.isnan(cand)
        ok = np.ones(rows.size, dtype=bool)
        with np.errstate(invalid="ignore"):
            if lo is not None:
                ok &= cand >= lo
            if hi is not None:
                ok &= cand <= hi
        ok = np.where(nan, step.keep_null, ok)
        return rows[ok], f"bounds=[{lo}, {hi}]"
    if isinstance(step, TopK):
        v = top_k_values(c.table, step, rows, name)
        k = step.count(rows.size)
        return _ranked(rows, v, c.id_rank, step.largest)[:k], f"k={k}"
    if isinstance(step, Ratio):
        k = step.count(rows.size)
        chosen = np.zeros(rows.size, dtype=bool)
        chosen[np.lexsort((np.arange(rows.size), c.id_rank[rows], c.random_keys[at][rows]))[:k]] = True
        return rows[chosen], f"k={k}"  # keep the incoming rank order
    if isinstance(step, Quota):
        return _quota(step, c, at, rows, name)
    if isinstance(step, Diversify):
        k = step.count(rows.size)
        if not rows.size:
            return rows, "k=0"
        x = embedding_matrix(c.load(rows, step.column), step.column)
        if step.method == "k_center":
            picked = k_center_greedy(x, k, normalise=step.normalise)
        else:
            picked = cluster_stratified(x, k, n_clusters=step.n_clusters, seed=step.seed, normalise=step.normalise)
        return rows[np.asarray(picked, dtype=np.int64)], f"k={k} method={step.method}"
    raise TypeError(f"not a selection step: {step!r}")


def select_compact(c: Compact, steps: Sequence) -> tuple[Result, pl.DataFrame]:
    """Apply parsed ``steps`` in order to the compact state: (per-row result, summary as
    policies.select gives it)."""
    n = c.id_rank.size
    labels = [label(s) for s in steps] + ["dedup.exact", "dedup.near"]
    codes = {lab: i for i, lab in reversed(list(enumerate(labels)))}
    res = Result(np.full(n, -1, dtype=np.int16 if len(labels) < 2**15 else np.int32),
                 np.zeros(n, dtype=np.int64), np.full(n, -1, dtype=np.int64), labels,
                 label(steps[-1]) if steps else NO_STEPS, any(isinstance(s, Dedup) for s in steps))
    order = np.arange(n, dtype=np.int64)  # the surviving rows, in the current rank order
    summary = []
    for at, step in enumerate(steps):
        kept, detail = _apply(step, at, c, order, res, codes)
        gone = np.ones(n, dtype=bool)
        gone[kept] = False
        gone = order[gone[order]]
        gone = gone[res.dropped[gone] < 0]  # not already given a dedup reason
        res.dropped[gone] = at
        summary.append({"step": at + 1, "name": labels[at], "rows_in": int(order.size),
                        "rows_out": int(kept.size), "dropped": int(order.size - kept.size), "detail": detail})
        order = kept
    res.rank[order] = np.arange(1, order.size + 1)
    schema = {"step": pl.Int64, "name": pl.Utf8, "rows_in": pl.Int64, "rows_out": pl.Int64,
              "dropped": pl.Int64, "detail": pl.Utf8}
    return res, pl.DataFrame(summary, schema=schema)
