"""What a selection step is, and the per-row state every step decides from.

A step is a frozen pydantic model (its options, checked once when the config loads) with a
``name`` (its key in ``select.steps``), a ``phase`` (steps run in phase order: dedup and filters
first, diversify last), a :meth:`~SelectionStep.label` (its ``dropped_by`` text) and one
:meth:`~SelectionStep.apply` over :class:`Compact`, the state instruct_selectors.stream_select
builds shard by shard. A new step is one file here with one such class, and its line in
``steps/__init__.py``'s ``BUILTIN``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, ClassVar

import numpy as np
import polars as pl
from instruct_selectors.color_filter import color_k
from instruct_selectors.dedup import DedupState
from pydantic import BaseModel, ConfigDict, Field, model_validator

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
PHASES = ("decontaminate/dedup", "filters", "rank", "diversify")


@dataclass
class Strata:
    """One quota field's value per row as codes into ``names`` (-1: no value)."""

    codes: np.ndarray
    names: list[str]


@dataclass
class Compact:
    """Everything the steps decide from, one entry per row in table order.

    ``table``: the columns the steps read (scores, a quota column, the decontamination mark);
    ``id_rank``: int64, the row's id's position in string order (equal ids, equal rank; ties are
    broken by id, so this rank is all the sorts need); ``strata``: {step position: :class:`Strata`}
    for quotas on a meta field; ``random_keys``: {step position: uint64 seeded hash key of the id}
    for ratio / random quota; ``dedup``: {step position: :class:`DedupState`}; ``load(rows,
    column)``: that column of those rows (in that order), for diversify, which needs embeddings."""

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
    codes: dict[str, int] = field(default_factory=dict)

    def drop(self, rows: np.ndarray, reason: str) -> None:
        """Give ``rows`` a reason of their own (dedup.exact, a filter's text) instead of the step's label."""
        if reason not in self.codes:
            self.codes[reason] = len(self.labels)
            self.labels.append(reason)
        self.dropped[rows] = self.codes[reason]


class SelectionStep(BaseModel):
    """The base of every step: frozen, unknown options refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: ClassVar[str]
    phase: ClassVar[int]

    def spec(self) -> dict:
        """The step as config writes it, ``{"top_k": {...}}`` with the options that were given (so a
        config dumps and fingerprints as it was written)."""
        return {self.name: self.model_dump(mode="json", exclude_unset=True)}

    def reads(self) -> tuple[str, ...]:
        """The columns this step reads (the one place that knows: stream_select and the config ask)."""
        column = getattr(self, "column", None)
        return (column,) if column else ()

    def label(self) -> str:
        """Short human label, used in dropped_by / keep_reason and the summary."""
        return self.name

    def marks(self, c: Compact, how: str) -> list:
        """This step's ``column`` (a mark made as shards are read), per row; a missing one is an
        error saying ``how`` to get it."""
        column = getattr(self, "column", None)
        if column not in c.table.columns:
            raise ValueError(f"{self.label()}: column {column!r} is not in the table: {how}")
        return c.table[column]

    def apply(self, at: int, c: Compact, rows: np.ndarray, res: Result) -> tuple[np.ndarray, str]:
        """(the rows kept, in their new rank order; a detail for the summary). ``at``: the step's
        position; ``rows``: the rows entering, in rank order. Rows dropped without
        ``res.drop(rows, reason)`` get the step's label."""
        raise NotImplementedError


class CountStep(SelectionStep):
    """A step that keeps a number of rows: k, a fraction, or tau candidates per kept row."""

    k: int | None = Field(None, ge=0)
    fraction: Fraction | None = None
    tau: float | None = Field(None, ge=1.0, description="candidates per selected row: k = floor(N / tau)")

    @model_validator(mode="after")
    def _one_count(self):
        if sum(x is not None for x in (self.k, self.fraction, self.tau)) != 1:
            raise ValueError("give exactly one of k, fraction, tau")
        return self

    def spec(self) -> dict:
        """As :meth:`SelectionStep.spec`, the count last: what to rank by, then how many."""
        ((name, options),) = super().spec().items()
        count = ("k", "fraction", "tau")
        return {name: {**{k: v for k, v in options.items() if k not in count},
                       **{k: options[k] for k in count if k in options}}}

    def count(self, n: int) -> int:
        return color_k(n, tau=self.tau, k=self.k, fraction=self.fraction)

    def count_label(self) -> str:
        return (f"k={self.k}" if self.k is not None else
                f"fraction={self.fraction}" if self.fraction is not None else f"tau={self.tau}")


def column_values(table: pl.DataFrame, column: str, step_name: str) -> np.ndarray:
    """``column`` as floats, nulls as NaN; ValueError naming ``step_name`` when it is missing."""
    if column not in table.columns:
        raise ValueError(
            f"{step_name}: column {column!r} is not in the table (columns: {', '.join(table.columns)})"
        )
    return table[column].cast(pl.Float64).fill_null(np.nan).to_numpy()


def ranked(rows: np.ndarray, v: np.ndarray, id_rank: np.ndarray, largest: bool) -> np.ndarray:
    """``rows`` by value (best first), ties by id, NaN last; stable on the incoming order."""
    vals = v[rows]
    nan = np.isnan(vals)
    key = np.where(nan, 0.0, -vals if largest else vals)
    return rows[np.lexsort((np.arange(rows.size), id_rank[rows], key, nan))]
