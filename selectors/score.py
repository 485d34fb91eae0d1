"""One scoring plan: the loss passes the requested scores need, each run once and shared.

    from instruct_selectors.score import score_table
    scored = score_table(table, prior_llm, scores=("color", "ifd", "ctx_loss", "ctx_attn"), cond_llm=cond)

Passes (each one ``llm.loss(...)`` call over the rows that need it; the backend batches them):

| pass          | model | prompt                               | feeds                                   |
|---------------|-------|--------------------------------------|-----------------------------------------|
| prior/full    | prior | chat(instruction + context)          | CoLoR's L_prior, IFD numerator,          |
|               |       |                                      | ctx_loss's second term, ctx_attn (when  |
|               |       |                                      | the prior is the probe), embeddings,    |
|               |       |                                      | target_sim, otd                         |
| prior/no_ctx  | prior | chat(instruction), rows with context | ctx_loss's first term                   |
| prior/alone   | prior | start token only                     | IFD denominator                         |
| cond/full     | cond  | chat(instruction + context)          | CoLoR's L_cond                          |
| probe/full    | probe | chat(instruction + context)          | ctx_attn from a separate probe model    |

Every loss is the mean NLL over response tokens (prompt masked), so rows of different lengths
compare, except CoLoR's, which sums them by default (``color_reduction``, see color_filter.py). The
formulas live in color_filter.py, ifd.py, context_dependency.py, target_sim.py and otd.py; this file only
decides which passes to run and feeds them. ``scores`` may also hold ``"embedding"``: the
mean-pooled last hidden state from the prior/full pass, stored as the ``embedding`` column for
diversity.py (no extra pass, no extra model).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
from instruct_selectors.color_filter import COLUMN as COLOR_COLUMN
from instruct_selectors.color_filter import REDUCTIONS, color_score, response_nll
from instruct_selectors.context_dependency import ATTN_COLUMN, LOSS_COLUMN, ctx_loss_score
from instruct_selectors.ifd import COLUMN as IFD_COLUMN
from instruct_selectors.ifd import ifd_score
from instruct_selectors.judge import COLUMN as JUDGE_COLUMN
from instruct_selectors.otd import COLUMN as OTD_COLUMN
from instruct_selectors.otd import otd_score
from instruct_selectors.target_sim import COLUMN as TARGET_SIM_COLUMN
from instruct_selectors.target_sim import EXTRA as TARGET_SIM_EXTRA
from instruct_selectors.target_sim import POOLINGS, target_sim_score

from pipelines.llm.base import LossRequest
from pipelines.schema import user_content

EMBEDDING_COLUMN = "embedding"
# The score catalogue: each score name and the column it writes (config and policies read it here).
SCORE_COLUMNS = {
    "color": COLOR_COLUMN,
    "ifd": IFD_COLUMN,
    "ctx_loss": LOSS_COLUMN,
    "ctx_attn": ATTN_COLUMN,
    "target_sim": TARGET_SIM_COLUMN,
    "embedding": EMBEDDING_COLUMN,
    "judge": JUDGE_COLUMN,
    "otd": OTD_COLUMN,
}
SCORES = tuple(SCORE_COLUMNS)
# One line per score for dataset cards and reports (the formulas are in each score's module).
SCORE_DEFINITIONS = {
    "color": "CoLoR-Filter: response loss under the prior minus under the prior fine-tuned on the target rows (higher: more target-like)",
    "ifd": "IFD: response loss with the instruction / without it (above 1: the instruction does not help)",
    "ctx_loss": "context dependency: response loss without the context minus with it",
    "ctx_attn": "context dependency: share of the response's attention that goes to the context tokens",
    "target_sim": "RDS+: cosine of the row's mean-pooled hidden state with the target rows' mean",
    "embedding": "the row's mean-pooled last hidden state (for diversity)",
    "judge": "LLM judge's 1-5 rating of helpfulness and correctness (rubric in judge.py)",
    "otd": "GOT-D: minus the row's dual potential in entropic OT from the pool to the target rows' embeddings (higher: moves the pool towards the target)",
}
# Scores an LLM writes (judge.py's ratings), not loss passes: score_table skips them.
GENERATED_SCORES = ("judge",)


@dataclass(frozen=True)
class Pass:
    """One loss pass: which model, which prompt form, over which rows, and what extras it returns."""

    model: str  # "prior" | "cond" | "probe"
    prompt: str  # "full" | "no_ctx" | "alone"
    only_with_context: bool = False
    hidden: bool = False
    attn: bool = False

    @property
    def name(self) -> str:
        return f"{self.model}/{self.prompt}"


def plan_passes(scores: Iterable[str], separate_probe: bool = False) -> list[Pass]:
    """The passes needed for ``scores``; the prior/full pass is shared by everything that can use it."""
    wanted = set(scores)
    unknown = wanted - set(SCORES)
    if unknown:
        raise ValueError(f"unknown score(s) {sorted(unknown)}: choose from {SCORES}")
    attn_on_prior = "ctx_attn" in wanted and not separate_probe
    passes = []
    if wanted & {"color", "ifd", "ctx_loss", "target_sim", "otd", "embedding"} or attn_on_prior:
        hidden = bool(wanted & {"embedding", "target_sim", "otd"})
        passes.append(Pass("prior", "full", hidden=hidden, attn=attn_on_prior))
    if "ctx_loss" in wanted:
        passes.append(Pass("prior", "no_ctx", only_with_context=True))
    if "ifd" in wanted:
        passes.append(Pass("prior", "alone"))
    if "color" in wanted:
        passes.append(Pass("cond", "full"))
    if "ctx_attn" in wanted and separate_probe:
        passes.append(Pass("probe", "full", attn=True))
    return passes


def build_request(prompt: str, instruction: str, context: str, response: str) -> LossRequest:
    """The request for one row under one prompt form (see the table in the module docstring)."""
    if prompt == "full":
        return LossRequest([{"role": "user", "content": user_content(instruction, context)}], response)
    if prompt == "no_ctx":
        return LossRequest([{"role": "user", "content": instruction}], response)
    if prompt == "alone":
        return LossRequest("", response)
    raise ValueError(f"unknown prompt form {prompt!r}")


def _is_eager(llm) -> bool:
    model = getattr(llm, "model", None)
    return model is not None and getattr(model.config, "_attn_implementation", None) == "eager"


def _run_pass(llm, p: Pass, table: pl.DataFrame, attn_layer: int | None, progress) -> dict[str, np.ndarray]:
    """Run one pass; arrays over all rows (NaN / None where the pass skipped the row)."""
    n = table.height
    has_ctx = np.array([bool(c) for c in table["context"].to_list()], dtype=bool)
    rows = np.flatnonzero(has_ctx) if p.only_with_context else np.arange(n)
    instr, ctx, resp = table["instruction"].to_list(), table["context"].to_list(), table["response"].to_list()
    requests = [build_request(p.prompt, instr[i], ctx[i], resp[i]) for i in rows]
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
        for key in ("hidden", "hidden_response"):
            out[key] = [None] * n
            for i, r in zip(rows, results, strict=True):
                out[key][i] = r.extras[key].astype(np.float32)
    return out


def _column(name: str, values: np.ndarray) -> pl.Series:
    # NaN means "not defined for this row" (no context, empty response): store it as null.
    return pl.Series(name, [None if np.isnan(v) else float(v) for v in values], dtype=pl.Float64)


def score_table(
    table: pl.DataFrame,
    prior_llm,
    *,
    scores: Sequence[str] = ("color", "ifd", "ctx_loss", "ctx_attn"),
    cond_llm=None,
    attn_layer: int | None = None,
    progress: Callable[[int], None] | None = None,
    probe_llm=None,
    color_reduction: str = "sum",
    target_vector: np.ndarray | None = None,
    target_pooling: str = "response",
    target_matrix: np.ndarray | None = None,
) -> pl.DataFrame:
    """Add one ``score_*`` column per requested score (and ``embedding`` when asked); nothing else changes.

    ``prior_llm`` / ``cond_llm`` / ``probe_llm`` are backends (``loss(requests, ...)``). ``ctx_attn``
    is read from the prior's pass unless a separate ``probe_llm`` is given; that model needs eager
    attention. ``attn_layer`` defaults to about two thirds of the probe's depth. ``color_reduction``
    ("mean" or "sum" over response tokens) is CoLoR's L; every other score uses the mean.
    ``target_sim`` needs ``target_vector`` (target_sim.target_embedding, computed once per run with
    the same ``target_pooling``): cosine of each row's pooled hidden state with it. ``otd`` needs
    ``target_matrix`` (target_sim.target_rows: one pooled embedding per target row): otd.py.
    ``judge`` (in GENERATED_SCORES) is not a loss: judge.judge_rows adds it, so it is skipped here.
    """
    wanted = tuple(dict.fromkeys(scores))
    if color_reduction not in REDUCTIONS:
        raise ValueError(f"color_reduction must be one of {REDUCTIONS}, got {color_reduction!r}")
    if "color" in wanted and cond_llm is None:
        raise ValueError(
            "score 'color' needs cond_llm: the conditional model (color_filter.build_conditional)"
        )
    if "target_sim" in wanted and target_vector is None:
        raise ValueError("score 'target_sim' needs target_vector (target_sim.target_embedding of the target rows)")
    if "otd" in wanted and target_matrix is None:
        raise ValueError("score 'otd' needs target_matrix (target_sim.target_rows of the target rows)")
    if target_pooling not in POOLINGS:
        raise ValueError(f"target_pooling must be one of {POOLINGS}, got {target_pooling!r}")
    passes = plan_passes(wanted, separate_probe=probe_llm is not None)
    models = {"prior": prior_llm, "cond": cond_llm, "probe": probe_llm}
    if "ctx_attn" in wanted:
        probe = probe_llm if probe_llm is not None else prior_llm
        if not _is_eager(probe):
            raise ValueError(
                "score 'ctx_attn' needs the probe model with eager attention: load it with "
                "eager_attention=True (or pass a separate probe_llm)"
            )
        if attn_layer is None:
            from pipelines.llm.nll import default_probe_layer

            attn_layer = default_probe_layer(probe.model)
    got = {p.name: _run_pass(models[p.model], p, table, attn_layer, progress) for p in passes}

    columns = []
    if "color" in wanted:
        prior_l, cond_l = (
            [response_nll(t, color_reduction) for t in got[name]["token_nll"]]
            for name in ("prior/full", "cond/full")
        )
        columns.append(_column(COLOR_COLUMN, color_score(prior_l, cond_l)))
    if "ifd" in wanted:
        columns.append(_column(IFD_COLUMN, ifd_score(got["prior/full"]["loss"], got["prior/alone"]["loss"])))
    if "ctx_loss" in wanted:
        columns.append(
            _column(LOSS_COLUMN, ctx_loss_score(got["prior/no_ctx"]["loss"], got["prior/full"]["loss"]))
        )
    if "ctx_attn" in wanted:
        source = "probe/full" if probe_llm is not None else "prior/full"
        columns.append(_column(ATTN_COLUMN, got[source]["attn"]))
    if "target_sim" in wanted:
        pooled = np.stack(got["prior/full"][TARGET_SIM_EXTRA[target_pooling]])
        columns.append(_column(TARGET_SIM_COLUMN, target_sim_score(pooled, np.asarray(target_vector))))
    if "otd" in wanted:
        pooled = np.stack(got["prior/full"][TARGET_SIM_EXTRA[target_pooling]])
        columns.append(_column(OTD_COLUMN, otd_score(pooled, np.asarray(target_matrix))))
    if "embedding" in wanted:
        hidden = [h.tolist() for h in got["prior/full"]["hidden"]]
        columns.append(pl.Series(EMBEDDING_COLUMN, hidden, dtype=pl.List(pl.Float32)))
    return table.with_columns(columns)
