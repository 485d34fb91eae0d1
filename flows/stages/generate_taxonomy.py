"""GLAN: taxonomy -> subjects -> syllabi -> homework questions -> answers (generators/glan.py)."""

from __future__ import annotations

import time

from flows.config import PipelineConfig, resolve_path
from flows.llm_cache import get_llm
from flows.stages.base import StageContext, StageSpec, clear, record
from flows.usage import stage_usage, usage_field


def _check(cfg: PipelineConfig) -> dict[str, int]:
    from generators.taxonomy import load_taxonomy

    path = cfg.generate.taxonomy.path
    return {path: len(load_taxonomy(resolve_path(path)))}


def _run(ctx: StageContext) -> dict:
    from generators.glan import run_glan

    cfg, run, t0 = ctx.cfg, ctx.run, time.perf_counter()
    c = cfg.generate.taxonomy
    with stage_usage(run, STAGE.name) as used:
        counts = run_glan(
            resolve_path(c.path), run.generator(STAGE.name), get_llm(cfg.model),
            subjects_per_discipline=c.subjects_per_discipline, sessions=c.sessions_per_syllabus,
            questions_per_syllabus=c.questions_per_syllabus, seed=cfg.run.seed,
            max_disciplines=c.max_disciplines, max_tokens=c.max_tokens, shard_size=cfg.run.shard_size,
        )
        return record(run, STAGE.name, t0, counts=counts, usage=usage_field(cfg, used),
                      rows_out=counts.get("examples", 0), rejects=counts.get("rejects", 0))


STAGE = StageSpec(name="generate_taxonomy", section="generate.taxonomy", run=_run, makes=("generated",),
                  enabled=lambda cfg: cfg.generate.taxonomy.enabled, check=_check,
                  retries=2, reset=clear(lambda run: run.generator("generate_taxonomy")))
