"""The rows a random control arm draws from, and the draw: does the ranking beat chance?

    from instruct_selectors.control_arms import candidates, random_pick
    pool = candidates(selected_table, steps)          # rows that survived dedup/decontam/filters
    ids = random_pick(pool["id"].to_list(), n=kept, seed=1)

A selection is dedup/decontamination -> filters -> rank -> diversify (instruct_selectors.policies).
The first two phases clean the pool; the last two choose. The fair control for "did choosing
help?" is a random pick of the same size from what the choosing steps saw: every row kept or
dropped by a rank or diversify step (``dropped_by`` is that step's label), never one that dedup,
decontamination or a filter removed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl
from instruct_selectors.policy_steps import Diversify, Quota, Ratio, TopK, label, parse_steps

CHOOSING_STEPS = (TopK, Ratio, Quota, Diversify)


def choosing_labels(steps: Sequence[Mapping[str, Any]]) -> set[str]:
    """``dropped_by`` labels of the steps that choose (rank and diversify), not those that clean."""
    return {label(s) for s in parse_steps(steps) if isinstance(s, CHOOSING_STEPS)}


def candidates(selected: pl.DataFrame, steps: Sequence[Mapping[str, Any]]) -> pl.DataFrame:
    """The rows of a selection table that reached the choosing steps: kept, or dropped by one of them."""
    if "keep" not in selected.columns:
        return selected
    reached = pl.col("keep") | pl.col("dropped_by").is_in(sorted(choosing_labels(steps)))
    return selected.filter(reached.fill_null(False))


def random_pick(ids: Sequence[str], n: int, seed: int) -> list[str]:
    """``n`` of the distinct ``ids``, seeded, whatever their order (sorted)."""
    order = sorted(set(ids), key=lambda i: (hashlib.sha256(f"random-arm:{seed}:{i}".encode()).hexdigest(), i))
    return sorted(order[:max(0, n)])
