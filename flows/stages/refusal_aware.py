"""R-Tuning on the kept rows (transform.refusal_aware, generators/refusal.py): the model answers
each one; transformed/ gets the certainty suffix, meta.known and response_original, shard by
shard (shards already there are skipped). Export then writes these rows."""

from __future__ import annotations

import time
from typing import Any

import polars as pl

from flows.llm_cache import get_llm
from flows.stages.base import StageContext, StageSpec, clear, record
from flows.usage import stage_usage, usage_field


def _run(ctx: StageContext) -> dict[str, Any]:
    from generators.refusal import run_refusal_aware

    cfg, run = ctx.cfg, ctx.run
    c = cfg.transform.refusal_aware
    if not c.enabled:
        raise ValueError("transform.refusal_aware is off: --set transform.refusal_aware.enabled=true")
    t0 = time.perf_counter()
    kept = pl.read_parquet(run.selected).filter(pl.col("keep"))
    with stage_usage(run, STAGE.name) as used:
        counts = run_refusal_aware(kept, run.transformed, get_llm(cfg.model), metric=c.metric,
                                   threshold=c.threshold, max_tokens=c.max_tokens, shard_size=cfg.run.shard_size)
        return record(run, STAGE.name, t0, usage=usage_field(cfg, used), **counts)


STAGE = StageSpec(name="refusal_aware", section="transform.refusal_aware", run=_run, needs=("selected",),
                  makes=("transformed",),
                  enabled=lambda cfg: cfg.transform.refusal_aware.enabled, retries=2, reset=clear(lambda run: run.transformed),
                  folders=("transformed",))
