"""Selection policies: a list of steps (dedup -> filters -> rank -> diversify) applied to a scored table.

    from instruct_selectors.policies import select
    table, summary = select(scored, [
        {"dedup": {"near_threshold": 0.8}},
        {"threshold": {"column": "score_ifd", "max": 1.0}},
        {"top_k": {"column": "score_color", "fraction": 0.1}},     # or k=..., tau=... (k = floor(N/tau))
        {"quota": {"field": "task_type", "per_stratum": 5, "column": "score_color"}},
        {"diversify": {"k": 50, "method": "k_center"}},
    ])

Steps (dicts as above, e.g. from a YAML config, or the pydantic models below):

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

import hashlib
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

import numpy as np
import polars as pl
from instruct_selectors.color_filter import color_k
from instruct_selectors.dedup import TEXT_FIELDS, DedupState, decide, dedup_state, row_texts
from instruct_selectors.diversity import cluster_stratified, embedding_matrix, k_center_greedy
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipelines.schema import meta_field

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class _Step(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def reads(self) -> tuple[str, ...]:
        """The columns this step reads (the one place that knows: stream_select and the config ask)."""
        column = getattr(self, "column", None)
        return (column,) if column else ()


class Decontaminate(_Step):
    """Drop rows that share a word n-gram with an eval set: ``column`` (decontam.mark) is set."""

    column: str = "contaminated_by"


class Filter(_Step):
    """Drop rows a user's row filter rejected (select.custom): ``column`` holds the reason, which
    becomes the row's dropped_by."""

    column: str = "filtered_by"


class Dedup(_Step):
    """Drop exact (normalised hash) and near (MinHash LSH) duplicates, keeping the first of each group."""

    exact: bool = True
    near: bool = True
    near_threshold: float = Field(0.8, gt=0.0, le=1.0, description="estimated Jaccard of word 3-grams")
    num_perm: int = Field(128, ge=16)
    ngram: int = Field(3, ge=1)
    fields: tuple[str, ...] = TEXT_FIELDS


class Threshold(_Step):
    """Keep rows whose ``column`` lies within the bounds (inclusive); null scores fail unless keep_null."""

    column: str
    min: float | None = None
    max: float | None = None
    min_quantile: Fraction | None = None
    max_quantile: Fraction | None = None
    keep_null: bool = False

    @model_validator(mode="after")
    def _one_bound(self):
        if self.min is None and self.max is None and self.min_quantile is None and self.max_quantile is None:
            raise ValueError("give at least one of min, max, min_quantile, max_quantile")
        if (self.min is not None and self.min_quantile is not None) or (
            self.max is not None and self.max_quantile is not None
        ):
            raise ValueError("give a lower (upper) bound either as a value or as a quantile, not both")
        return self


class _Count(_Step):
    k: int | None = Field(None, ge=0)
    fraction: Fraction | None = None
    tau: float | None = Field(None, ge=1.0, description="candidates per selected row: k = floor(N / tau)")

    @model_validator(mode="after")
    def _one_count(self):
        if sum(x is not None for x in (self.k, self.fraction, self.tau)) != 1:
            raise ValueError("give exactly one of k, fraction, tau")
        return self

    def count(self, n: int) -> int:
        return color_k(n, tau=self.tau, k=self.k, fraction=self.fraction)


class TopK(_Count):
    """Keep the k rows with the largest ``column`` (smallest when largest=False), globally."""

    column: str
    largest: bool = True


class Ratio(_Count):
    """Keep a seeded random k / fraction of the rows (the random baseline); same seed, same rows."""

    seed: int = 0


class Quota(_Step):
    """Per stratum of ``field`` (a meta field or a column): keep per_stratum rows or a fraction of each.

    Within a stratum rows are ranked by ``column`` when given, else drawn at random with ``seed``
    when ``random``, else taken in the incoming rank order (e.g. a previous top_k's). ``strata``
    names strata expected to exist, so an empty one shows up in the summary.
    """

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


class Diversify(_Count):
    """Keep k spread-out rows: k-center greedy from the best-ranked row, or round-robin over k-means clusters."""

    method: Literal["k_center", "cluster"] = "k_center"
    column: str = "embedding"
    n_clusters: int = Field(8, ge=1)
    seed: int = 0
    normalise: bool = True


STEP_TYPES: dict[str, type[_Step]] = {
    "decontaminate": Decontaminate,
    "filter": Filter,
    "dedup": Dedup,
    "threshold": Threshold,
    "top_k": TopK,
    "ratio": Ratio,
    "quota": Quota,
    "diversify": Diversify,
}
_NAMES = {cls: name for name, cls in STEP_TYPES.items()}
_PHASE = {Decontaminate: 0, Filter: 0, Dedup: 0, Threshold: 1, TopK: 2, Ratio: 2, Quota: 2, Diversify: 3}
_PHASE_NAMES = ("decontaminate/dedup", "filters", "rank", "diversify")
Step = Decontaminate | Filter | Dedup | Threshold | TopK | Ratio | Quota | Diversify


def parse_steps(specs: Sequence[_Step | Mapping[str, Any]]) -> list[_Step]:
    """Config dicts ``{"top_k": {...}}`` (or step objects) -> validated steps in a valid order."""
    steps: list[_Step] = []
    for i, spec in enumerate(specs, 1):
        if isinstance(spec, _Step):
            steps.append(spec)
            continue
        if not isinstance(spec, Mapping) or len(spec) != 1:
            raise ValueError(
                f"step {i}: write each step as a one-key mapping like {{'top_k': {{...}}}}, got {spec!r}"
            )
        ((name, options),) = spec.items()
        if name not in STEP_TYPES:
            raise ValueError(f"step {i}: unknown step {name!r}; choose from {', '.join(STEP_TYPES)}")
        try:
            steps.append(STEP_TYPES[name](**dict(options or {})))
        except ValidationError as err:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'options'}: {e['msg']}" for e in err.errors()
            )
            raise ValueError(f"step {i} ({name}): {problems}") from None
    for i in range(1, len(steps)):
        a, b = _PHASE[type(steps[i - 1])], _PHASE[type(steps[i])]
        if b < a:
            raise ValueError(
                f"step {i + 1} ({_NAMES[type(steps[i])]}) comes after a {_PHASE_NAMES[a]} step: "
                f"steps run in the order {' -> '.join(_PHASE_NAMES)}"
            )
    return steps


def label(step: _Step) -> str:
    """Short human label of a step, used in dropped_by / keep_reason and the summary."""
    name = _NAMES[type(step)]
    if isinstance(step, Dedup | Decontaminate | Filter):
        return name
    if isinstance(step, Threshold):
        parts = [
            f"{step.column}>={step.min}" if step.min is not None else None,
            f"{step.column}<={step.max}" if step.max is not None else None,
            f"{step.column}>=q{step.min_quantile}" if step.min_quantile is not None else None,
            f"{step.column}<=q{step.max_quantile}" if step.max_quantile is not None else None,
        ]
        return f"{name}({', '.join(p for p in parts if p)})"
    count = (
        f"k={step.k}"
        if getattr(step, "k", None) is not None
        else (
            f"fraction={step.fraction}"
            if getattr(step, "fraction", None) is not None
            else f"tau={getattr(step, 'tau', None)}"
        )
    )
    if isinstance(step, TopK):
        return f"{name}({step.column}, {count}{'' if step.largest else ', smallest'})"
    if isinstance(step, Ratio):
        return f"{name}({count}, seed={step.seed})"
    if isinstance(step, Quota):
        per = (
            f"per_stratum={step.per_stratum}" if step.per_stratum is not None else f"fraction={step.fraction}"
        )
        return f"{name}({step.field}, {per}{', by ' + step.column if step.column else ''})"
    return f"{name}({step.method}, {count})"


# ---- helpers -------------------------------------------------------------------------------------


def _values(table: pl.DataFrame, column: str, step_name: str) -> np.ndarray:
    if column not in table.columns:
        raise ValueError(
            f"{step_name}: column {column!r} is not in the table (columns: {', '.join(table.columns)})"
        )
    return table[column].cast(pl.Float64).fill_null(np.nan).to_numpy()


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


def _apply(
    step: _Step, table: pl.DataFrame, rows: list[int], ids: list[str], dup_of: list,
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
        v = _values(table, step.column, name)
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
        v = _values(table, step.column, name)
        k = step.count(len(rows))
        return _ranked(rows, v, ids, step.largest)[:k], {}, f"k={k}"

    if isinstance(step, Ratio):
        k = step.count(len(rows))
        chosen = set(_random_order(rows, ids, step.seed)[:k])
        return [r for r in rows if r in chosen], {}, f"k={k}"  # keep the incoming rank order

    if isinstance(step, Quota):
        strata = _strata(table, step.field)
        v = _values(table, step.column, name) if step.column else None
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


def select(
    table: pl.DataFrame, steps: Sequence[_Step | Mapping[str, Any]],
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
        kept, reasons, detail = _apply(step, table, order, ids, dup_of, state)
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
