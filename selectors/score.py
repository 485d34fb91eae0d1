"""The scoring plan: the passes the requested scores declare, each (model, prompt) run once and shared.

    from instruct_selectors.score import score_rows
    scored, rejects = score_rows(table, resolve(["ifd", "ctx_loss"]), {"prior": llm})

Each score (``selectors/scores/<name>.py``) declares the passes it reads; this file only unions
them, runs each pass once over the rows that need it (one ``llm.loss(...)`` call, batched by the
backend), and hands the results to every score's pure ``compute``. The pass table:

| pass          | model | prompt                               | rows                 |
|---------------|-------|--------------------------------------|----------------------|
| prior/full    | prior | chat(instruction + context)          | all (+ hidden/attn)  |
| prior/no_ctx  | prior | chat(instruction)                    | rows with a context  |
| prior/alone   | prior | start token only                     | all                  |
| cond/full     | cond  | chat(instruction + context)          | all                  |
| probe/full    | probe | chat(instruction + context)          | all (attn)           |
| <model>/<own> | any   | a form the score declares (prompts)  | all                  |

Every loss is the mean NLL over response tokens (prompt masked); ``token_nll`` keeps the tokens
for scores that reduce otherwise (CoLoR sums them by default).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
from instruct_selectors.scores.base import (
    PASSES,
    PROMPTS,
    Prompt,
    Score,
    ScoreInputs,
    ScoreResult,
    build_request,
)
from instruct_selectors.scores.catalogue import resolve

__all__ = ["Pass", "plan_passes", "score_rows", "score_table", "build_request"]


@dataclass(frozen=True)
class Pass:
    """One loss pass: which model, which prompt form, over which rows, and what extras it returns."""

    model: str  # "prior" | "cond" | "probe"
    prompt: str  # "full" | "no_ctx" | "alone" | a form a score declares in its prompts
    only_with_context: bool = False
    hidden: bool = False
    attn: bool = False
    form: Prompt | None = field(default=None, compare=False, hash=False)  # a score's own prompt form

    @property
    def name(self) -> str:
        return f"{self.model}/{self.prompt}"

    def request(self, instruction: str, context: str, response: str):
        """This pass's loss request for one row."""
        return (self.form or PROMPTS[self.prompt])(instruction, context, response)


def _specs(scores: Sequence[Score | str]) -> list[Score]:
    names = [s for s in scores if isinstance(s, str)]
    known = {s.name: s for s in resolve(names)} if names else {}
    return [known[s] if isinstance(s, str) else s for s in scores]


def plan_passes(scores: Sequence[Score | str], separate_probe: bool = False) -> list[Pass]:
    """The passes ``scores`` read, in table order; attention comes from the prior unless a probe is given."""
    specs = _specs(scores)
    wanted = list(dict.fromkeys(p for s in specs for p in s.passes))
    extras = {e for s in specs for e in s.extras}
    if "attn" in extras and separate_probe:
        wanted.append("probe/full")
    forms: dict[str, Prompt] = {}
    for s in specs:
        for name, form in s.prompts.items():
            if forms.setdefault(name, form) is not form:
                raise ValueError(f"two scores define the prompt form {name!r} differently: rename one")
    passes = []
    for name in [*(p for p in PASSES if p in wanted), *(p for p in wanted if p not in PASSES)]:
        model, prompt = name.split("/")
        on_prior = name == "prior/full"
        passes.append(Pass(model, prompt, only_with_context=prompt == "no_ctx",
                           hidden=on_prior and "hidden" in extras,
                           attn=(name == "probe/full") or (on_prior and "attn" in extras and not separate_probe),
                           form=forms.get(prompt)))
    return passes


def _run_pass(llm, p: Pass, table: pl.DataFrame, attn_layer: int | None, progress) -> dict[str, Any]:
    """Run one pass; arrays over all rows (NaN / None where the pass skipped the row)."""
    n = table.height
    has_ctx = np.array([bool(c) for c in table["context"].to_list()], dtype=bool)
    rows = np.flatnonzero(has_ctx) if p.only_with_context else np.arange(n)
    instr, ctx, resp = table["instruction"].to_list(), table["context"].to_list(), table["response"].to_list()
    requests = [p.request(instr[i], ctx[i], resp[i]) for i in rows]
    # Only pass the extras a pass needs, so backends with a plain loss(requests) also work.
    kwargs = {}
    if p.hidden:
        kwargs["want_hidden"] = True
    if p.attn:
        kwargs["attn_layer"] = attn_layer
    if progress is not None:
        kwargs["progress"] = progress
    results = llm.loss(requests, **kwargs) if requests else []
    out = {"loss": np.full(n, np.nan), "token_nll": [None] * n}
    out["loss"][rows] = [r.mean for r in results]
    for i, r in zip(rows, results, strict=True):
        out["token_nll"][i] = r.token_nll
    if p.attn:
        out["attn"] = np.full(n, np.nan)
        out["attn"][rows] = [r.extras["attn_ratio"] for r in results]
    if p.hidden:
        for key in ("hidden", "hidden_response", "hidden_weighted"):
            out[key] = [None] * n
            for i, r in zip(rows, results, strict=True):
                out[key][i] = r.extras[key].astype(np.float32)
    return out


def _column(score: Score, values: Any, n: int) -> pl.Series:
    """A score's values as its column; NaN means "not defined for this row" and is stored as null."""
    if isinstance(values, pl.Series):
        series = values.alias(score.column)
    else:
        values = list(values)
        if score.dtype == pl.Float64:
            values = [None if v is None or (isinstance(v, float) and np.isnan(v)) else float(v) for v in values]
        series = pl.Series(score.column, values, dtype=score.dtype)
    if series.len() != n:
        raise ValueError(f"score {score.name!r} returned {series.len()} values for {n} rows")
    if score.dtype == pl.Float64:
        series = series.cast(pl.Float64).fill_nan(None)
    return series


def _is_eager(llm) -> bool:
    model = getattr(llm, "model", None)
    return model is not None and getattr(model.config, "_attn_implementation", None) == "eager"


def score_rows(
    table: pl.DataFrame,
    scores: Sequence[Score],
    models: Mapping[str, Any],
    *,
    options: Mapping[str, Any] | None = None,
    target: Mapping[str, np.ndarray] | None = None,
    llm: Callable[[str], Any] | None = None,
    progress: Callable[[int], None] | None = None,
    seed: int = 0,
) -> tuple[pl.DataFrame, list[dict[str, Any]]]:
    """Add each score's column to ``table``; returns (scored table, rejects the scores reported).

    ``models``: backends by role ("prior", and "cond" / "probe" when a score reads their pass);
    ``options``: each score's raw options by name (validated by its ``options`` model; the
    attention pass's probe layer is the ``layer`` option of the score that reads it);
    ``target``: the condition stage's arrays; ``llm(name)``: other models scores ask for (judge)."""
    options, target = options or {}, target or {}
    for s in scores:
        if s.target is not None and target.get(s.target_name) is None and s.target != "conditional_model":
            raise ValueError(f"score {s.name!r} needs {s.target_name}: run the condition stage first")
    passes = plan_passes(scores, separate_probe=models.get("probe") is not None)
    for p in passes:
        if models.get(p.model) is None:
            raise ValueError(f"pass {p.name} needs the {p.model!r} model"
                             + (" (cond_llm: the conditional model, color_filter.build_conditional)"
                                if p.model == "cond" else ""))
    attn_layer = None
    if any(p.attn for p in passes):
        probe = models.get("probe") or models["prior"]
        if not _is_eager(probe):
            raise ValueError("score 'ctx_attn' needs the probe model with eager attention: load it with "
                             "eager_attention=True (or pass a separate probe_llm)")
        layers = [getattr(s.parse_options(options.get(s.name)), "layer", None) for s in scores if "attn" in s.extras]
        attn_layer = next((layer for layer in layers if layer is not None), None)
        if attn_layer is None:
            from pipelines.llm.nll import default_probe_layer

            attn_layer = default_probe_layer(probe.model)
    got = {p.name: _run_pass(models[p.model], p, table, attn_layer, progress) for p in passes}
    columns, rejects = [], []
    for s in scores:
        inputs = ScoreInputs(table, got, s.parse_options(options.get(s.name)), target, llm, seed)
        out = s.compute(inputs)
        if isinstance(out, ScoreResult):
            rejects += out.rejects
            out = out.values
        columns.append(_column(s, out, table.height))
    return table.with_columns(columns), rejects


def score_table(
    table: pl.DataFrame,
    prior_llm,
    *,
    scores: Sequence[str] = ("color", "ifd", "ctx_loss", "ctx_attn"),
    cond_llm=None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    progress: Callable[[int], None] | None = None,
    probe_llm=None,
    target_vector: np.ndarray | None = None,
    target_matrix: np.ndarray | None = None,
) -> pl.DataFrame:
    """:func:`score_rows` of built-in scores by name, with the target arrays as keywords (benchmarks
    and tests); ``options``: per score name, as ``score.options`` (e.g. ``{"color": {"reduction": "mean"}}``)."""
    specs = resolve(scores)
    names = {s.name for s in specs}
    if "target_sim" in names and target_vector is None:
        raise ValueError("score 'target_sim' needs target_vector (target_sim.target_embedding of the target rows)")
    if "otd" in names and target_matrix is None:
        raise ValueError("score 'otd' needs target_matrix (target_sim.target_rows of the target rows)")
    target = {"target_embedding": target_vector, "target_matrix": target_matrix}
    scored, _ = score_rows(table, [s for s in specs if not s.models], {"prior": prior_llm, "cond": cond_llm,
                           "probe": probe_llm}, options={k: v for k, v in (options or {}).items() if k in names},
                           target=target, progress=progress)
    return scored
