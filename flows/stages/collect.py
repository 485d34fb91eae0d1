"""Gather generated examples and input datasets into examples/ shards (input order kept).

Each source -- every generator, then every input file in read order (``generate.inputs``: globs
and folders expand in sorted order when the run starts, flows/inputs.py) -- gets shards of its
own, numbered on from the last source's: a new input file sorted last only adds shards, and every
shard that already held the same rows is left untouched (same bytes, inode and mtime), so score
rescoring nothing but the new shards. A file inserted in the middle renumbers the shards after it;
score finds their scored shards by content and renames them (flows/stages/score.py).

Streams: inputs are read in chunks (pipelines.stream_io) and shards written as they fill."""

from __future__ import annotations

import time
from typing import Any

import polars as pl

from flows.config import PipelineConfig, resolve_path
from flows.inputs import expand_inputs, patterns
from flows.resume import content_digest
from flows.stages.base import StageContext, StageSpec, record
from pipelines.schema import CORE_COLUMNS
from pipelines.shards import atomic_write_jsonl, list_shards, remove_surplus_shards, shard_path


def _check(cfg: PipelineConfig) -> dict[str, int]:
    """The first rows of each input (io.check_rows), streamed: a bad file fails in seconds."""
    from pipelines.io import check_input

    io = cfg.io
    return {path: check_input(resolve_path(path), io.check_rows, strict_encoding=io.strict_encoding,
                              max_line_bytes=io.max_line_bytes).table.height
            for path in expand_inputs(cfg.generate.inputs)}


def _run(ctx: StageContext) -> dict[str, Any]:
    from pipelines.io import NoRowsError
    from pipelines.stream_io import ShardWriter, iter_examples

    cfg, run, t0 = ctx.cfg, ctx.run, time.perf_counter()
    # What the pool held before (bytes only, not names): a shard written now with bytes already
    # there (renumbered) counts as reused, like one left untouched.
    before = {content_digest(p) for p in list_shards(run.examples)}
    per_source: dict[str, int] = {}
    rejects = next_index = 0
    written: list[tuple[int, int, bool]] = []

    def writer() -> ShardWriter:
        return ShardWriter(run.examples, cfg.run.shard_size, start=next_index)

    def close(out: ShardWriter) -> int:
        end = next_index + out.close(empty_shard=False, remove_surplus=False)
        written.extend(out.written)
        return end

    for name, folder in run.generated_folders():
        shards = list_shards(folder)
        if not shards:
            continue
        out = writer()
        for shard in shards:
            t = pl.read_parquet(shard).select(CORE_COLUMNS)
            out.add(t)
            per_source[name] = per_source.get(name, 0) + t.height
        next_index = close(out)
    files = expand_inputs(cfg.generate.inputs)
    for path in files:
        bad: list[dict[str, Any]] = []
        per_source[str(path)] = 0
        out = writer()
        try:
            for part in iter_examples(resolve_path(path), strict_encoding=cfg.io.strict_encoding, chunk_rows=10_000,
                                      max_line_bytes=cfg.io.max_line_bytes):
                out.add(part.table.select(CORE_COLUMNS))
                per_source[str(path)] += part.table.height
                bad += part.rejects
        except NoRowsError:  # every row rejected: keep the reasons, then stop the run with the error
            atomic_write_jsonl(bad, run.input_rejects(path))
            raise
        next_index = close(out)
        rejects += len(bad)
        if bad:
            atomic_write_jsonl(bad, run.input_rejects(path))
    rows = sum(n for _, n, _ in written)
    if rows == 0:
        raise ValueError("no examples to score: generation produced none and no --input was given"
                         + (f" (or matched by {', '.join(patterns(cfg.generate.inputs))})"
                            if patterns(cfg.generate.inputs) else ""))
    remove_surplus_shards(run.examples, next_index)
    reused = [(i, n) for i, n, changed in written
              if not changed or content_digest(shard_path(run.examples, i)) in before]
    rows_reused = sum(n for _, n in reused)
    counts = {"rows_new": rows - rows_reused, "rows_reused": rows_reused,
              "shards_new": len(written) - len(reused), "shards_reused": len(reused)}
    notes = [f"{counts['rows_new']} new rows ({counts['shards_new']} new or changed shards), "
             f"{rows_reused} rows reused ({len(reused)} shards already in the pool)"]
    unmatched = [p for p in patterns(cfg.generate.inputs) if not expand_inputs([p])]
    notes += [f"input {p} matched no file" for p in unmatched]
    return record(run, STAGE.name, t0, rows_in=rows + rejects, rows_out=rows, rejects=rejects,
                  per_source=per_source, shards=next_index, inputs=files, notes=notes, **counts)


STAGE = StageSpec(name="collect", section="generate.inputs", run=_run, needs=("generated",),
                  makes=("examples",), check=_check,
                  files=lambda cfg: expand_inputs(cfg.generate.inputs), folders=("examples",))
