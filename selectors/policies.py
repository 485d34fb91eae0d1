"""Selection policies: a list of steps (dedup -> filters -> rank -> diversify) applied to a scored table.

    from instruct_selectors.policies import select
    table, summary = select(scored, [
        {"dedup": {"near_threshold": 0.8}},
        {"threshold": {"column": "score_ifd", "max": 1.0}},
        {"top_k": {"column": "score_color", "fraction": 0.1}},     # or k=..., tau=... (k = floor(N/tau))
        {"quota": {"field": "task_type", "per_stratum": 5, "column": "score_color"}},
        {"diversify": {"k": 50, "method": "k_center"}},
    ])

Steps (dicts as above, e.g. from a YAML config, or the pydantic models of policy_steps.py):

| step      | keeps                                                                                 |
|-----------|---------------------------------------------------------------------------------------|
| decontaminate | rows with no n-gram shared with an eval set (``contaminated_by`` null; decontam.py) |
| dedup     | the first row of each exact / near-duplicate group (dedup.py)                          |
| threshold | rows with min <= column <= max (bounds as values or quantiles of the rows entering)    |
| top_k     | the k largest (or smallest) of a column; k, fraction or tau of the rows entering      |
| ratio     | a seeded random fraction (or k) of the rows entering -- the random baseline           |
| quota     | per stratum of a meta field or column: the best per_stratum rows or fraction of each   |
| diversify | k spread-out rows by embeddings, k-center greedy or cluster-stratified (diversity.py)  |

Steps must come in that phase order (dedup, then filters, then rank steps, then diversify);
fractions are of the rows entering a step. Ties are broken by ``id`` (ascending), so the same
table always gives the same selection whatever its row order; null/NaN scores rank last and
fail thresholds. Output columns: ``keep`` (bool), ``dropped_by`` (the step label that dropped
the row, null when kept), ``keep_reason`` (the last step's label for kept rows), ``select_rank``
(1-based position in the final order for kept rows), and ``dup_of`` when a dedup step ran.
The summary has one row per step: rows in, rows out, dropped and a detail string (per-stratum
counts for quotas, so empty strata show up).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl
from instruct_selectors.dedup import DedupState
from instruct_selectors.policy_apply import apply_step
from instruct_selectors.policy_steps import Dedup, SelectionStep, label, parse_steps


def select(
    table: pl.DataFrame, steps: Sequence[SelectionStep | Mapping[str, Any]],
    dedup_states: Mapping[int, DedupState] | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Apply ``steps`` in order; return (table with keep/dropped_by/keep_reason/select_rank, summary).

    ``dedup_states``: {step position (0-based): state for every table row}, precomputed by a caller
    that does not hold the texts (instruct_selectors.stream_select); else built from the table."""
    steps = parse_steps(steps)
    n = table.height
    ids = table["id"].to_list()
    order = list(range(n))  # the surviving rows, in the current rank order (table order at first)
    dropped_by: list[str | None] = [None] * n
    dup_of: list[str | None] = [None] * n
    summary = []
    for idx, step in enumerate(steps, 1):
        name = label(step)
        state = (dedup_states or {}).get(idx - 1)
        kept, reasons, detail = apply_step(step, table, order, ids, dup_of, state)
        kept_set = set(kept)
        for r in order:
            if r not in kept_set:
                dropped_by[r] = reasons.get(r, name)
        summary.append(
            {
                "step": idx,
                "name": name,
                "rows_in": len(order),
                "rows_out": len(kept),
                "dropped": len(order) - len(kept),
                "detail": detail,
            }
        )
        order = kept

    rank = {r: pos for pos, r in enumerate(order, 1)}
    last = label(steps[-1]) if steps else "no steps"
    columns = [
        pl.Series("keep", [dropped_by[i] is None for i in range(n)], dtype=pl.Boolean),
        pl.Series("dropped_by", dropped_by, dtype=pl.Utf8),
        pl.Series("keep_reason", [last if i in rank else None for i in range(n)], dtype=pl.Utf8),
        pl.Series("select_rank", [rank.get(i) for i in range(n)], dtype=pl.Int64),
    ]
    if any(isinstance(s, Dedup) for s in steps):
        columns.append(pl.Series("dup_of", dup_of, dtype=pl.Utf8))
    schema = {
        "step": pl.Int64,
        "name": pl.Utf8,
        "rows_in": pl.Int64,
        "rows_out": pl.Int64,
        "dropped": pl.Int64,
        "detail": pl.Utf8,
    }
    return table.with_columns(columns), pl.DataFrame(summary, schema=schema)
