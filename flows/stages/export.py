"""Export the selection: Parquet, JSONL, an HF dataset on disk and its card (pushed on request)."""

from __future__ import annotations

import time
from typing import Any

import polars as pl

from flows.lineage import generator_settings, models_per_stage, score_definitions
from flows.publish import publish
from flows.stages.base import StageContext, StageSpec, record
from pipelines.shards import list_shards


def card_info(ctx: StageContext) -> dict[str, Any]:
    """What the card says made the data; its paths as the run folder shares them (RunFolder.relative)."""
    cfg, records = ctx.cfg, list(ctx.records.values())
    return ctx.run.relative({
        "config": cfg.model_dump(mode="json"),
        "models": models_per_stage(cfg, records),
        "generators": generator_settings(cfg),
        "scores": score_definitions(cfg),
        "stages": records,
        "fingerprint": cfg.fingerprint(),
    })


def _run(ctx: StageContext) -> dict[str, Any]:
    from pipelines.export_stream import export_selected

    cfg, run, t0 = ctx.cfg, ctx.run, time.perf_counter()
    # Batch by batch from the selection file; with the refusal transform, the kept rows come
    # from its shards (the dropped ones, when exported, as they were).
    transformed = list_shards(run.transformed) if cfg.transform.refusal_aware.enabled else None
    paths, n_out = export_selected(run.selected, run.dataset, card_info=card_info(ctx),
                                   include_dropped=cfg.export.include_dropped, kept_shards=transformed,
                                   test_fraction=cfg.export.test_fraction, seed=cfg.run.seed)
    # With --train the train stage pushes, once its selected-vs-random table is on the card.
    pushed = publish(ctx) if not cfg.train.method else None
    rows_in = pl.scan_parquet(run.selected).select(pl.len()).collect().item()
    return record(run, STAGE.name, t0, rows_in=rows_in, rows_out=n_out,
                  outputs={k: str(v) for k, v in paths.items()}, pushed=pushed)


STAGE = StageSpec(name="export", section="export", run=_run, needs=("selected", "transformed"),
                  makes=("dataset",), folders=("dataset",))
