"""quota: per stratum of a meta field or a column, the best per_stratum rows or a fraction of each;
strata named in ``strata`` show up in the summary even when empty."""

from __future__ import annotations

import numpy as np
import polars as pl
from instruct_selectors.color_filter import color_k
from instruct_selectors.steps.base import (
    Compact,
    Fraction,
    Result,
    SelectionStep,
    Strata,
    column_values,
    ranked,
)
from pydantic import Field, model_validator


class Quota(SelectionStep):
    """Per stratum of ``field`` (a meta field or a column): keep per_stratum rows or a fraction of each.

    Within a stratum rows are ranked by ``column`` when given, else drawn at random with ``seed``
    when ``random``, else taken in the incoming rank order (e.g. a previous top_k's). ``strata``
    names strata expected to exist, so an empty one shows up in the summary.
    """

    name = "quota"
    phase = 2
    field: str
    per_stratum: int | None = Field(None, ge=0)
    fraction: Fraction | None = None
    column: str | None = None
    largest: bool = True
    random: bool = False
    seed: int = 0
    strata: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _one_count(self):
        if (self.per_stratum is None) == (self.fraction is None):
            raise ValueError("give exactly one of per_stratum, fraction")
        return self

    def label(self) -> str:
        per = f"per_stratum={self.per_stratum}" if self.per_stratum is not None else f"fraction={self.fraction}"
        return f"{self.name}({self.field}, {per}{', by ' + self.column if self.column else ''})"

    def _strata(self, c: Compact, at: int) -> Strata:
        if self.field in c.table.columns:  # a column (also one that ``finish`` added)
            s = c.table[self.field]
            s = s if s.dtype == pl.Utf8 else pl.Series([None if v is None else str(v) for v in s.to_list()],
                                                       dtype=pl.Utf8)
            names = s.drop_nulls().unique().sort().to_list()
            codes = s.replace_strict(names, list(range(len(names))), default=-1, return_dtype=pl.Int64)
            return Strata(codes.to_numpy(), names)
        return c.strata[at]  # a meta field: coded shard by shard in stream_select's first pass

    def apply(self, at: int, c: Compact, rows: np.ndarray, res: Result) -> tuple[np.ndarray, str]:
        st = self._strata(c, at)
        v = column_values(c.table, self.column, self.label()) if self.column else None
        code = st.codes[rows]
        pos = np.arange(rows.size)
        if v is not None:
            vals = v[rows]
            nan = np.isnan(vals)
            within = (c.id_rank[rows], np.where(nan, 0.0, -vals if self.largest else vals), nan)
        elif self.random:
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
        if self.per_stratum is not None:
            k = np.full(size.size, self.per_stratum, dtype=np.int64)
        else:
            k = np.array([color_k(int(n), fraction=self.fraction) for n in size], dtype=np.int64)
        nth = np.arange(idx.size) - np.repeat(gstart, size)
        chosen = np.zeros(rows.size, dtype=bool)
        chosen[idx[nth < np.repeat(k, size)]] = True
        counts: dict[str | None, str] = {}
        for gc, n, kk in zip(gcode.tolist(), size.tolist(), k.tolist(), strict=True):
            s = None if gc < 0 else st.names[gc]
            counts[s] = f"{s}={min(kk, n)}/{n}"
        for s in self.strata:
            if s not in counts:
                kk = self.per_stratum if self.per_stratum is not None else color_k(0, fraction=self.fraction)
                counts[s] = f"{s}={min(kk, 0)}/0"
        detail = " ".join(counts[s] for s in sorted(counts, key=lambda s: (s is None, s or "")))
        kept = rows[chosen]
        if v is not None:
            kept = ranked(kept, v, c.id_rank, self.largest)
        return kept, detail
