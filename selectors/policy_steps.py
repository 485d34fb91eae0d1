"""The selection step models (pydantic, checked once) and their order: what each step of
:func:`instruct_selectors.policies.select` is configured with, and its label in ``dropped_by``.

    from instruct_selectors.policy_steps import parse_steps, label
    steps = parse_steps([{"dedup": {}}, {"top_k": {"column": "score_color", "fraction": 0.1}}])
    [label(s) for s in steps]   # ["dedup", "top_k(score_color, fraction=0.1)"]

What a step does to the rows is ``policy_apply.py``; the table of steps is in ``policies.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from instruct_selectors.color_filter import color_k
from instruct_selectors.dedup import TEXT_FIELDS
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class SelectionStep(BaseModel):
    """The base of every step model: frozen, unknown options refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def reads(self) -> tuple[str, ...]:
        """The columns this step reads (the one place that knows: stream_select and the config ask)."""
        column = getattr(self, "column", None)
        return (column,) if column else ()


class Decontaminate(SelectionStep):
    """Drop rows that share a word n-gram with an eval set: ``column`` (decontam.mark) is set."""

    column: str = "contaminated_by"


class Filter(SelectionStep):
    """Drop rows a user's row filter rejected (select.custom): ``column`` holds the reason, which
    becomes the row's dropped_by."""

    column: str = "filtered_by"


class Dedup(SelectionStep):
    """Drop exact (normalised hash) and near (MinHash LSH) duplicates, keeping the first of each group."""

    exact: bool = True
    near: bool = True
    near_threshold: float = Field(0.8, gt=0.0, le=1.0, description="estimated Jaccard of word 3-grams")
    num_perm: int = Field(128, ge=16)
    ngram: int = Field(3, ge=1)
    fields: tuple[str, ...] = TEXT_FIELDS


class Threshold(SelectionStep):
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


class _Count(SelectionStep):
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
    """Keep the k rows with the largest ``column`` (smallest when largest=False), globally; or, with
    ``fuse`` (two or more columns), the k best by reciprocal rank fusion: each column ranks the rows
    entering the step, largest first, and a row scores sum 1 / (rrf_k + rank) (Cormack et al. 2009)."""

    column: str | None = None
    fuse: tuple[str, ...] = ()
    rrf_k: float = Field(60.0, gt=0.0)
    largest: bool = True

    @model_validator(mode="after")
    def _column_or_fuse(self):
        if (self.column is None) == (not self.fuse):
            raise ValueError("give either column or fuse (a list of columns), not both")
        if self.fuse and len(self.fuse) < 2:
            raise ValueError("fuse needs two or more columns (one column: use column)")
        if self.fuse and not self.largest:
            raise ValueError("fuse ranks every column largest first: largest=False does not apply")
        return self

    def reads(self) -> tuple[str, ...]:
        return self.fuse or super().reads()


class Ratio(_Count):
    """Keep a seeded random k / fraction of the rows (the random baseline); same seed, same rows."""

    seed: int = 0


class Quota(SelectionStep):
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


STEP_TYPES: dict[str, type[SelectionStep]] = {
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


def parse_steps(specs: Sequence[SelectionStep | Mapping[str, Any]]) -> list[SelectionStep]:
    """Config dicts ``{"top_k": {...}}`` (or step objects) -> validated steps in a valid order."""
    steps: list[SelectionStep] = []
    for i, spec in enumerate(specs, 1):
        if isinstance(spec, SelectionStep):
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


def label(step: SelectionStep) -> str:
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
        by = f"rrf({', '.join(step.fuse)})" if step.fuse else step.column
        return f"{name}({by}, {count}{'' if step.largest else ', smallest'})"
    if isinstance(step, Ratio):
        return f"{name}({count}, seed={step.seed})"
    if isinstance(step, Quota):
        per = (
            f"per_stratum={step.per_stratum}" if step.per_stratum is not None else f"fraction={step.fraction}"
        )
        return f"{name}({step.field}, {per}{', by ' + step.column if step.column else ''})"
    return f"{name}({step.method}, {count})"
