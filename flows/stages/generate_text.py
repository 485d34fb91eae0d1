"""Bonito: unannotated passage + task type -> instruction and response (generators/bonito.py).

Mapped per shard of (passage, task type, sample) items: ``plan`` writes the items in the flow's
process, the flow maps ``run_shard`` over the task runner (threads or Dask workers, each loading
the model once), ``finish`` dedups and counts. The shards are the same bytes whichever process
made them: each shard's sampling seed comes from its items, not from where it ran."""

from __future__ import annotations

from flows.config import PipelineConfig, resolve_path
from flows.llm_cache import get_llm
from flows.stages.base import ShardMap, ShardPlan, StageContext, StageSpec, clear, record
from flows.usage import saved_usage, stage_usage


def _check(cfg: PipelineConfig) -> dict[str, int]:
    from pipelines.io import check_input

    path, io = cfg.generate.text.path, cfg.io
    return {path: check_input(resolve_path(path), io.check_rows, strict_encoding=io.strict_encoding,
                              max_line_bytes=io.max_line_bytes, passages=True).table.height}


def _plan(ctx: StageContext) -> ShardPlan:
    """Read the passages and write the work items (generators.bonito.plan_bonito): no model yet."""
    from generators.bonito import plan_bonito

    cfg, run, c = ctx.cfg, ctx.run, ctx.cfg.generate.text
    plan = plan_bonito(
        resolve_path(c.path), run.generator(STAGE.name), model=cfg.model.model, task_types=tuple(c.task_types),
        samples_per_passage=c.samples_per_passage, mode=c.mode, seed=cfg.run.seed, max_passages=c.max_passages,
        max_tokens=c.max_tokens, shard_size=cfg.run.shard_size)
    return ShardPlan(plan["todo"], info={"shards": plan["shards"]})


def _count(ctx: StageContext) -> int:
    return _plan(ctx).info.get("shards", 0)


def run_shard(ctx: StageContext, index: int) -> int:
    """One shard of passages x task types (any worker: it reads the plan from the run folder)."""
    from generators.bonito import bonito_shard

    with stage_usage(ctx.run, STAGE.name, index):
        return bonito_shard(ctx.run.generator(STAGE.name), index, get_llm(ctx.cfg.model))


def _finish(ctx: StageContext, started: float, rows: int, plan: ShardPlan | None = None) -> dict:
    from generators.bonito import finish_bonito

    cfg, run = ctx.cfg, ctx.run
    counts = finish_bonito(run.generator(STAGE.name))
    return record(run, STAGE.name, started, counts=counts, usage=saved_usage(cfg, run, STAGE.name),
                  rows_out=counts.get("examples", 0), rejects=counts.get("rejects", 0))


def _run(ctx: StageContext) -> dict:
    return STAGE.per_shard.run_all(ctx)


STAGE = StageSpec(name="generate_text", section="generate.text", run=_run, makes=("generated",),
                  enabled=lambda cfg: cfg.generate.text.enabled, check=_check, retries=2,
                  files=lambda cfg: [cfg.generate.text.path], folders=("generate_text",),
                  reset=clear(lambda run: run.generator("generate_text")),
                  per_shard=ShardMap(count=_count, run_shard=run_shard, finish=_finish, plan=_plan))
