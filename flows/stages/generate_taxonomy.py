"""GLAN: taxonomy -> subjects -> syllabi -> homework questions -> answers (generators/glan.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from types import SimpleNamespace

from flows.config import PipelineConfig, resolve_path
from flows.llm_cache import get_llm
from flows.stages.base import ShardMap, StageContext, StageSpec, clear, record
from flows.usage import saved_usage, stage_usage


def _check(cfg: PipelineConfig) -> dict[str, int]:
    from generators.taxonomy import load_taxonomy

    path = cfg.generate.taxonomy.path
    return {path: len(load_taxonomy(resolve_path(path)))}


def _rounds(ctx: StageContext, map_round: Callable[[list[str]], int]) -> dict:
    """Level by level (each reads the last one's table): every level's missing shards are one
    round of tasks over the flow's task runner, ids ``<level>/<index>``."""
    from generators.glan import run_glan

    cfg, run, t0 = ctx.cfg, ctx.run, time.perf_counter()
    c = cfg.generate.taxonomy
    # The model is called in the shards only; each keeps its own usage ledger.
    counts = run_glan(
        resolve_path(c.path), run.generator(STAGE.name), model_ref(cfg),
        subjects_per_discipline=c.subjects_per_discipline, sessions=c.sessions_per_syllabus,
        questions_per_syllabus=c.questions_per_syllabus, seed=cfg.run.seed,
        max_disciplines=c.max_disciplines, max_tokens=c.max_tokens, shard_size=cfg.run.shard_size,
        map_shards=lambda level, folder, todo: map_round([f"{level}/{i}" for i in todo]),
    )
    return record(run, STAGE.name, t0, counts=counts, usage=saved_usage(cfg, run, STAGE.name),
                  rows_out=counts.get("examples", 0), rejects=counts.get("rejects", 0))


def run_shard(ctx: StageContext, shard: str) -> int:
    """One shard of one GLAN level, ``<level>/<index>`` (any worker: it reads the level's plan)."""
    from generators.glan_levels import glan_level_shard

    level, index = shard.split("/")
    with stage_usage(ctx.run, STAGE.name, f"{level}-{int(index):05d}"):
        return glan_level_shard(ctx.run.generator(STAGE.name) / level, int(index), get_llm(ctx.cfg.model))


def model_ref(cfg: PipelineConfig) -> SimpleNamespace:
    """What run_glan needs of the model in the flow's process -- its name and whether its backend
    constrains decoding -- without loading it there: the shards load it where they run."""
    from pipelines.llm import backend_class

    return SimpleNamespace(model_id=cfg.model.model,
                           structured_output=backend_class(cfg.model.backend).structured_output)


def _run(ctx: StageContext) -> dict:
    return STAGE.per_shard.run_all(ctx)


STAGE = StageSpec(name="generate_taxonomy", section="generate.taxonomy", run=_run, makes=("generated",),
                  enabled=lambda cfg: cfg.generate.taxonomy.enabled, check=_check,
                  files=lambda cfg: [cfg.generate.taxonomy.path], folders=("generate_taxonomy",),
                  retries=2, reset=clear(lambda run: run.generator("generate_taxonomy")),
                  per_shard=ShardMap(run_shard=run_shard, rounds=_rounds))
