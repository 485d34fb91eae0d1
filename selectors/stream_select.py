"""Selection over shards without holding the texts: the same result as :func:`policies.select` on
the concatenated shards, with memory bounded by small per-row state.

    from instruct_selectors.stream_select import select_shards
    summary, rows = select_shards(shard_paths, steps, out_path)

Pass 1 reads each shard once and keeps only what the steps decide from: ``id``, the columns the
steps name (threshold/top_k/quota columns, the quota field or ``meta``, the decontamination
column, embeddings for diversify) and, per dedup step, the :class:`~instruct_selectors.dedup.DedupState`
(exact keys and band hashes in memory, MinHash signatures in a memory-mapped file under
``workdir``). :func:`policies.select` runs on that compact table with the precomputed dedup
state, so keep / dropped_by / keep_reason / select_rank / dup_of and the summary are the ones
the in-memory selection gives. Pass 2 reads each shard again and writes it with those columns as
one row group of ``out_path`` (Parquet, written to a temporary file and renamed, so readers see
either the old or the whole new file).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from instruct_selectors.dedup import StateWriter, row_texts
from instruct_selectors.policies import Dedup, Quota, parse_steps, select

from pipelines.progress import StageBar

RESULT_COLUMNS = ("keep", "dropped_by", "keep_reason", "select_rank", "dup_of")
Prepare = Callable[[pl.DataFrame], pl.DataFrame]


def progress(paths: Sequence[Path], desc: str, unit: str = "shard"):
    bar = StageBar(desc, total=len(paths), unit=unit)
    try:
        for p in paths:
            yield p
            bar(1)
    finally:
        bar.close()


def needed_columns(steps: Sequence[Any], columns: Sequence[str]) -> list[str]:
    """The columns of a shard (``columns``) that the steps read, ``id`` first."""
    want = ["id"]
    for s in steps:
        want += s.reads()
        if isinstance(s, Quota):
            want.append(s.field if s.field in columns else "meta")
    out: list[str] = []
    for c in want:
        if c not in out and c in columns:
            out.append(c)
    return out


def select_shards(
    paths: Sequence[Path],
    steps: Sequence[Any],
    out_path: Path,
    *,
    prepare: Prepare | None = None,
    carry: Sequence[str] = (),
    finish: Callable[[pl.DataFrame], Prepare] | None = None,
    workdir: Path | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Select across ``paths`` (shards in order) and write every row with the selection columns to
    ``out_path``. Returns (summary, compact table: the carried columns and the result columns).

    ``prepare``: applied to each shard as read (both passes, e.g. decontamination marks);
    ``carry``: more columns to keep in the compact table; ``finish``: given the compact table
    after pass 1, returns a function applied to the compact table and to each shard before
    selection (e.g. flags whose cut-off is a quantile over all rows)."""
    steps = parse_steps(steps)
    prepare = prepare or (lambda t: t)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=workdir or out_path.parent, prefix=".select-") as tmp:
        writers = {i: StateWriter(Path(tmp) / f"sig-{i}.bin", near_threshold=s.near_threshold,
                                  num_perm=s.num_perm, ngram=s.ngram)
                   for i, s in enumerate(steps) if isinstance(s, Dedup)}
        parts: list[pl.DataFrame] = []
        for path in progress(paths, desc="select: pass 1 (per-row state)", unit="shard"):
            shard = prepare(pl.read_parquet(path))
            keep = needed_columns(steps, shard.columns) + [c for c in carry if c in shard.columns]
            parts.append(shard.select(list(dict.fromkeys(keep))))
            for i, w in writers.items():
                w.add(row_texts(shard, steps[i].fields))
            del shard
        compact = pl.concat(parts, how="vertical") if parts else pl.DataFrame({"id": []}, schema={"id": pl.Utf8})
        del parts
        states = {i: w.finish() for i, w in writers.items()}
        tag = finish(compact) if finish else (lambda t: t)
        compact = tag(compact)
        result, summary = select(compact, steps, dedup_states=states)
        results = result.select([c for c in RESULT_COLUMNS if c in result.columns])
        _write(paths, out_path, results, lambda t: tag(prepare(t)), Path(tmp))
        states.clear()
    return summary, result


def _write(paths: Sequence[Path], out_path: Path, results: pl.DataFrame, prepare: Prepare, tmp: Path) -> None:
    part = tmp / out_path.name
    writer: pq.ParquetWriter | None = None
    schema: pa.Schema | None = None
    offset = 0
    try:
        for path in progress(paths, desc="select: pass 2 (write)", unit="shard"):
            shard = prepare(pl.read_parquet(path))
            shard = shard.with_columns(results.slice(offset, shard.height))
            offset += shard.height
            arrow = shard.to_arrow()
            if writer is None:
                schema = arrow.schema
                writer = pq.ParquetWriter(part, schema, compression="zstd", write_statistics=False)
            elif arrow.schema != schema:
                try:
                    arrow = arrow.cast(schema)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as e:
                    raise ValueError(f"{path}: its columns do not match the first shard's ({e})") from None
            writer.write_table(arrow)
        if writer is None:  # no shards: an empty table with the result columns
            pl.DataFrame(schema={"id": pl.Utf8, **results.schema}).write_parquet(part)
    finally:
        if writer is not None:
            writer.close()
    part.replace(out_path)
