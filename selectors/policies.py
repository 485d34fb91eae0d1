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

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl
from instruct_selectors.steps.base import SelectionStep
from instruct_selectors.stream_select import select_shards


def select(table: pl.DataFrame, steps: Sequence[SelectionStep | Mapping[str, Any]]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Apply ``steps`` in order; return (table with keep/dropped_by/keep_reason/select_rank, summary).

    The streamed selection (instruct_selectors.stream_select) over this one table: there is one
    engine, whether the rows sit in memory or in a thousand shards."""
    with tempfile.TemporaryDirectory(prefix="select-") as tmp:
        out = Path(tmp) / "selected.parquet"
        summary, _ = select_shards([table], steps, out, quiet=True)
        return pl.read_parquet(out), summary
