"""Gather generated examples and input datasets into examples/ shards (input order kept).

Streams: inputs are read in chunks (pipelines.stream_io) and shards written as they fill."""

from __future__ import annotations

import time
from typing import Any

import polars as pl

from flows.config import PipelineConfig, resolve_path
from flows.stages.base import StageContext, StageSpec, record
from pipelines.schema import CORE_COLUMNS
from pipelines.shards import atomic_write_jsonl, list_shards


def _check(cfg: PipelineConfig) -> dict[str, int]:
    """The first rows of each input (io.check_rows), streamed: a bad file fails in seconds."""
    from pipelines.io import check_input

    io = cfg.io
    return {path: check_input(resolve_path(path), io.check_rows, strict_encoding=io.strict_encoding,
                              max_line_bytes=io.max_line_bytes).table.height for path in cfg.generate.inputs}


def _run(ctx: StageContext) -> dict[str, Any]:
    from pipelines.io import NoRowsError
    from pipelines.stream_io import ShardWriter, iter_examples

    cfg, run, t0 = ctx.cfg, ctx.run, time.perf_counter()
    per_source, rejects = {}, 0
    out = ShardWriter(run.examples, cfg.run.shard_size)
    for name, folder in run.generated_folders():
        for shard in list_shards(folder):
            t = pl.read_parquet(shard).select(CORE_COLUMNS)
            out.add(t)
            per_source[name] = per_source.get(name, 0) + t.height
    for path in cfg.generate.inputs:
        bad: list[dict[str, Any]] = []
        per_source[str(path)] = 0
        try:
            for part in iter_examples(resolve_path(path), strict_encoding=cfg.io.strict_encoding, chunk_rows=10_000,
                                      max_line_bytes=cfg.io.max_line_bytes):
                out.add(part.table.select(CORE_COLUMNS))
                per_source[str(path)] += part.table.height
                bad += part.rejects
        except NoRowsError:  # every row rejected: keep the reasons, then stop the run with the error
            atomic_write_jsonl(bad, run.input_rejects(path))
            raise
        rejects += len(bad)
        if bad:
            atomic_write_jsonl(bad, run.input_rejects(path))
    if out.rows == 0:
        raise ValueError("no examples to score: generation produced none and no --input was given")
    n_shards = out.close()
    return record(run, STAGE.name, t0, rows_in=out.rows + rejects, rows_out=out.rows,
                  rejects=rejects, per_source=per_source, shards=n_shards)


STAGE = StageSpec(name="collect", section="generate.inputs", run=_run, needs=("generated",),
                  makes=("examples",), check=_check)
