"""One selection pass over the scored shards (instruct_selectors.stream_select), with the run's
decontamination (eval sets and the held-out target rows) and row filters (select.custom): what the
select stage runs once and the choose stage runs to find each candidate's pool."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
from instruct_selectors.steps.base import SelectionStep

from flows.config import PipelineConfig, resolve_path
from flows.stages.base import StageContext
from pipelines.shards import list_shards


def eval_sets(paths: list[str]) -> dict[str, pl.DataFrame]:
    """Eval set name (its file name; the path when two share a name) -> its rows, via pipelines.io."""
    from pipelines.io import read_examples

    names = [Path(p).name for p in paths]
    return {(n if names.count(n) == 1 else p): read_examples(resolve_path(p)).table
            for n, p in zip(names, paths, strict=True)}


def held_out_set(cfg: PipelineConfig) -> dict[str, pl.DataFrame]:
    """{"<target file> (held out)": the target rows held out of the condition stage}, or {} when none."""
    from flows.target_parts import target_parts

    parts = target_parts(cfg)
    if parts is None or parts.held_out.is_empty():
        return {}
    return {f"{Path(cfg.score.target).name} (held out)": parts.held_out}


def decontamination_files(cfg: PipelineConfig) -> list[str]:
    """The user files this stage reads: the eval sets, and the target whose held-out rows join them."""
    return list(cfg.select.decontaminate.against) + ([cfg.score.target] if cfg.score.target else [])


def _context_flag(cfg: PipelineConfig, shards: list[Path]):
    """The finish hook tagging context-dependent rows (cut-off over every row), or None."""
    from instruct_selectors.context_dependency import (
        PAPER_THRESHOLD,
        context_threshold,
        tag_context_dependent,
    )

    names = pl.read_parquet_schema(shards[0]).keys() if shards else []
    column = next((c for c in ("score_ctx_attn", "score_ctx_loss") if c in names), None)
    if column is None:
        return None, None
    threshold, quantile = cfg.score.ctx_threshold, cfg.score.ctx_quantile

    def finish(compact: pl.DataFrame):
        cut = context_threshold(compact[column], threshold if threshold is not None or quantile is not None
                                else PAPER_THRESHOLD, quantile)
        return lambda t: tag_context_dependent(t, column, threshold=cut)

    return column, finish


def selection(ctx: StageContext, steps: list[SelectionStep], out: Path,
              carry: tuple[str, ...] = ()) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, Any]]:
    """Run ``steps`` over the scored shards into ``out`` (every row, with the selection columns),
    decontaminating against the eval sets and held-out target rows and applying select.custom.
    Returns (summary, compact table, the record's decontamination fields); ``carry``: more columns
    for the compact table."""
    from instruct_selectors.row_filters import COLUMN as FILTER_COLUMN
    from instruct_selectors.row_filters import load_filters, mark
    from instruct_selectors.stream_select import select_shards

    from flows.config_choose import LENGTH_COLUMN

    cfg, run = ctx.cfg, ctx.run
    decontam, extra = cfg.select.decontaminate, {}
    shards = list_shards(run.scored)
    marks, carry = [], list(carry)
    against = eval_sets(decontam.against) | held_out_set(cfg)
    if against:
        from instruct_selectors import decontam as dc

        index = dc.build_index(against, n=decontam.n)  # once; shards stream through it
        marks.append(lambda t: dc.mark(t, index))
        carry.append(dc.COLUMN)
    filters = load_filters(cfg.select.custom)
    if filters:
        marks.append(lambda t: mark(t, filters))
        carry.append(FILTER_COLUMN)

    def prepare(t: pl.DataFrame) -> pl.DataFrame:
        for m in marks:
            t = m(t)
        return t

    column, finish = _context_flag(cfg, shards)
    if column:
        carry.append(column)
    steps = cfg.select.steps_to_run(steps, held_out=bool(against))
    if LENGTH_COLUMN in carry or any(LENGTH_COLUMN in s.reads() for s in steps):
        marks.append(lambda t: t.with_columns(pl.col("response").str.len_chars().cast(pl.Int64).alias(LENGTH_COLUMN)))
        carry.append(LENGTH_COLUMN)  # the length baseline's ranking (select.auto's "longest")
    summary, compact = select_shards(shards, steps, out, prepare=prepare, carry=list(dict.fromkeys(carry)),
                                     finish=finish)
    if against:
        extra["decontamination"] = {"against": list(against), "n": decontam.n,
                                    "eval_ngrams": index.sizes(), **dc.contamination_counts(compact)}
    return summary, compact, extra


def chosen_steps(ctx: StageContext) -> list[SelectionStep]:
    """select.steps, with the ranking the choose stage kept when select.auto is on."""
    from instruct_selectors.policy_steps import parse_steps

    from flows.target_parts import auto_candidates

    choice = ctx.record("choose") if auto_candidates(ctx.cfg) else None
    return parse_steps(choice["steps"]) if choice else ctx.cfg.select.steps
