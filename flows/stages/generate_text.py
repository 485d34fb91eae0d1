"""Bonito: unannotated passage + task type -> instruction and response (generators/bonito.py)."""

from __future__ import annotations

import time

from flows.config import PipelineConfig, resolve_path
from flows.llm_cache import get_llm
from flows.stages.base import StageContext, StageSpec, clear, record
from flows.usage import stage_usage, usage_field


def _check(cfg: PipelineConfig) -> dict[str, int]:
    from pipelines.io import check_input

    path, io = cfg.generate.text.path, cfg.io
    return {path: check_input(resolve_path(path), io.check_rows, strict_encoding=io.strict_encoding,
                              max_line_bytes=io.max_line_bytes, passages=True).table.height}


def _run(ctx: StageContext) -> dict:
    from generators.bonito import run_bonito

    cfg, run, t0 = ctx.cfg, ctx.run, time.perf_counter()
    c = cfg.generate.text
    with stage_usage(run, STAGE.name) as used:
        counts = run_bonito(
            resolve_path(c.path), run.generator(STAGE.name), get_llm(cfg.model),
            task_types=tuple(c.task_types), samples_per_passage=c.samples_per_passage, mode=c.mode,
            seed=cfg.run.seed, max_passages=c.max_passages, max_tokens=c.max_tokens, shard_size=cfg.run.shard_size,
        )
        return record(run, STAGE.name, t0, counts=counts, usage=usage_field(cfg, used),
                      rows_out=counts.get("examples", 0), rejects=counts.get("rejects", 0))


STAGE = StageSpec(name="generate_text", section="generate.text", run=_run, makes=("generated",),
                  enabled=lambda cfg: cfg.generate.text.enabled, check=_check,
                  retries=2, reset=clear(lambda run: run.generator("generate_text")))
