"""Run the selection steps over the compact per-row state (instruct_selectors.steps.base.Compact):
each step's ``apply`` gets the rows still in, in rank order, and returns those it keeps.

    from instruct_selectors.compact_select import select_compact
    result, summary = select_compact(Compact(table, id_rank, ...), steps)

The state is built shard by shard by :mod:`instruct_selectors.stream_select`, the one engine:
in-memory selection (:func:`instruct_selectors.policies.select`) is that run on one table.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl
from instruct_selectors.steps.base import Compact, Result, SelectionStep
from instruct_selectors.steps.dedup import Dedup

NO_STEPS = "no steps"
DEDUP_REASONS = ("dedup.exact", "dedup.near")
SUMMARY_SCHEMA = {"step": pl.Int64, "name": pl.Utf8, "rows_in": pl.Int64, "rows_out": pl.Int64,
                  "dropped": pl.Int64, "detail": pl.Utf8}


def select_compact(c: Compact, steps: Sequence[SelectionStep]) -> tuple[Result, pl.DataFrame]:
    """Apply parsed ``steps`` in order to the compact state: (per-row result, summary: one row per
    step with rows in, rows out, dropped and the step's detail)."""
    n = c.id_rank.size
    labels = [s.label() for s in steps] + list(DEDUP_REASONS)
    res = Result(np.full(n, -1, dtype=np.int16 if len(labels) < 2**15 else np.int32),
                 np.zeros(n, dtype=np.int64), np.full(n, -1, dtype=np.int64), labels,
                 steps[-1].label() if steps else NO_STEPS, any(isinstance(s, Dedup) for s in steps),
                 codes={lab: i for i, lab in reversed(list(enumerate(labels)))})
    order = np.arange(n, dtype=np.int64)  # the surviving rows, in the current rank order
    summary = []
    for at, step in enumerate(steps):
        kept, detail = step.apply(at, c, order, res)
        gone = np.ones(n, dtype=bool)
        gone[kept] = False
        gone = order[gone[order]]
        gone = gone[res.dropped[gone] < 0]  # not already given a reason of their own
        res.dropped[gone] = at
        summary.append({"step": at + 1, "name": labels[at], "rows_in": int(order.size),
                        "rows_out": int(kept.size), "dropped": int(order.size - kept.size), "detail": detail})
        order = kept
    res.rank[order] = np.arange(1, order.size + 1)
    return res, pl.DataFrame(summary, schema=SUMMARY_SCHEMA)
