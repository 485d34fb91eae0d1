"""Hold target rows out of the condition stage, so the train stage evaluates on rows no score saw.

    from instruct_selectors.holdout import split_ids, split_table
    split = split_ids(ids, fraction=0.3, seed=0)    # Split(conditioning=[...], held_out=[...], note=None)
    cond, held, split = split_table(target, 0.3, 0)

target_sim's vector, GOT-D's rows and CoLoR's conditional model are built from the target set; a
fine-tune evaluated on those same rows is graded on what chose its data (a leak). The split is by
row ``id`` (a content hash): a row repeated in the target lands on one side only. Which ids are
held out depends on the seed and the ids alone (each id ranked by ``sha256(seed:id)``), not on
the file's row order. Sizes: ``round(fraction * n)`` distinct ids, at least 1 and at most n - 1
when n >= 2; a target of one distinct row cannot be split and says so in ``note``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl


@dataclass(frozen=True)
class Split:
    """Distinct ids on each side (sorted), and why nothing was held out when that happens."""

    conditioning: list[str]
    held_out: list[str]
    note: str | None = None


def seeded_order(ids: Sequence[str], seed: int) -> list[str]:
    """The distinct ``ids`` in a seeded order that does not depend on their input order."""
    return sorted(set(ids), key=lambda i: (hashlib.sha256(f"{seed}:{i}".encode()).hexdigest(), i))


def split_ids(ids: Sequence[str], fraction: float, seed: int) -> Split:
    """Hold out ``fraction`` of the distinct ``ids`` (seeded); see the module doc for the sizes."""
    if not 0 <= fraction < 1:
        raise ValueError(f"the held-out fraction must be in [0, 1), got {fraction}")
    order = seeded_order(ids, seed)
    n = len(order)
    if fraction == 0:
        return Split(sorted(order), [], "score.target_holdout=0: nothing held out, train evaluates on "
                     "the rows the condition stage used")
    if n < 2:
        return Split(sorted(order), [], f"the target has {n} distinct row(s), too few to split: the "
                     "condition stage and train's evaluation use the same row (a leak)")
    k = min(n - 1, max(1, round(fraction * n)))
    return Split(sorted(order[k:]), sorted(order[:k]))


def split_table(table: pl.DataFrame, fraction: float, seed: int) -> tuple[pl.DataFrame, pl.DataFrame, Split]:
    """(conditioning rows, held-out rows, the split) of a table with an ``id`` column, rows in table order."""
    split = split_ids(table["id"].to_list(), fraction, seed)
    held = table["id"].is_in(split.held_out)
    return table.filter(~held), table.filter(held), split
