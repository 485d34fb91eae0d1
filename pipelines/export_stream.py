"""The export, batch by batch: the one path both exports take.

    from pipelines.export_stream import export_selected
    paths, n = export_selected(run.selected, run.dataset, card_info=..., test_fraction=0.1, seed=0)
    # R-Tuning: the kept rows from the transform's shards, the dropped ones from the selection file
    paths, n = export_selected(run.selected, run.dataset, card_info=..., include_dropped=True,
                               kept_shards=list_shards(run.transformed))

:func:`export_rows` writes rows that arrive in batches: ``messages`` is added per batch, the
Parquet shards and JSON lines are appended as they go, the HF dataset is then streamed from the
shards; the seeded test split and the card come from the rows without their texts.
:func:`export_selected` feeds it from Parquet files a record batch at a time;
:func:`pipelines.export.export_dataset` feeds it one in-memory table. The files are the same for
the same rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from pipelines.read_ahead import ahead
from pipelines.shards import atomic_write_text
from pipelines.writers.card import check_card_info, dataset_card_text, write_plots
from pipelines.writers.rows import SLICE_ROWS, export_table, test_mask
from pipelines.writers.split import SplitWriter


def export_rows(
    batches: Iterable[pl.DataFrame],
    rows: pl.DataFrame,
    schema: pl.DataFrame,
    out_dir: Path | str,
    *,
    card_info: Mapping[str, Any],
    selected: pl.DataFrame | None = None,
    shard_rows: int = 5000,
    test_fraction: float = 0.0,
    seed: int = 0,
    slice_rows: int = SLICE_ROWS,
) -> dict[str, Path]:
    """Export the rows that ``batches`` yield, in order, into ``out_dir``.

    ``rows``: the same rows, in the same order, with ``id`` when there is a test split and what
    the card reads (source, meta, score columns; no texts needed). ``schema``: the batches' columns
    and types (0 rows), which type the files when no rows come. ``selected``, ``card_info``,
    ``test_fraction``, ``seed``: as :func:`pipelines.export.export_dataset` takes them.
    """
    if shard_rows <= 0:
        raise ValueError(f"shard_rows must be positive, got {shard_rows}")
    check_card_info(card_info)
    out = Path(out_dir)
    is_test = test_mask(rows["id"], test_fraction, seed) if test_fraction > 0 else None
    empty = export_table(schema.clear())
    writers = {"train": SplitWriter(out, shard_rows, slice_rows)}
    if test_fraction > 0:
        writers["test"] = SplitWriter(out / "test", shard_rows, slice_rows)
    try:
        done = 0
        # Each batch is read and given its messages in a thread while this one writes the last.
        for batch, part in ahead((b, export_table(b, slice_rows)) for b in batches if b.height):
            if is_test is not None:
                test = is_test.slice(done, batch.height)
                writers["test"].add(part.filter(test))
                part = part.filter(~test)
            done += batch.height
            writers["train"].add(part)
        if done != rows.height:
            raise ValueError(f"the batches held {done} rows but `rows` has {rows.height}")
        paths: dict[str, Path] = {"dir": out, **writers["train"].close(empty)}
        if "test" in writers:
            paths |= {f"test_{k}": v for k, v in writers["test"].close(empty).items()}
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    plots = write_plots(selected, out)
    card_rows = rows.with_columns([pl.lit(None).alias(c) for c in empty.columns if c not in rows.columns])
    n_test = int(is_test.sum()) if is_test is not None else 0
    splits = {"train": rows.height - n_test, "test": n_test} if test_fraction > 0 else None
    card = out / "README.md"
    atomic_write_text(card, dataset_card_text(card_rows.select(empty.columns), card_info, selected, plots,
                                              splits=splits))
    return {**paths, "card": card}


def _batches(path: Path, keep: bool | None, batch_rows: int, schema: pl.DataFrame | None) -> Iterator[pl.DataFrame]:
    """The rows of one Parquet file a record batch at a time: those whose ``keep`` is ``keep`` (all
    when None), aligned to ``schema`` when given (columns it lacks are null)."""
    # pre_buffer=False: with it, pyarrow keeps the buffers of row groups already read (RSS grew
    # by 470 MB over a 1M-row file); without it, memory stays at one batch.
    for batch in pq.ParquetFile(path, pre_buffer=False).iter_batches(batch_size=batch_rows):
        part = pl.from_arrow(batch)
        if keep is not None:
            part = part.filter(pl.col("keep") if keep else ~pl.col("keep"))
        if schema is not None and part.height:
            part = pl.concat([schema, part], how="diagonal_relaxed").select(schema.columns)
        yield part


def card_columns(path: Path, with_id: bool = True) -> pl.DataFrame:
    """What the test split and the card read of every row: id (``with_id``: only a test split
    needs it), keep, source, meta and the numeric score columns (not the texts, nor the
    selection's reason columns, which grow with rows)."""
    schema = pl.read_parquet_schema(path)
    wanted = [c for c in (("id",) if with_id else ()) + ("keep", "source", "meta") if c in schema]
    return pl.read_parquet(path, columns=wanted + [c for c, t in schema.items() if c.startswith("score_")
                                                   and t.is_numeric()])


def export_selected(
    selected_path: Path | str,
    out_dir: Path | str,
    *,
    card_info: Mapping[str, Any],
    include_dropped: bool = False,
    kept_shards: Sequence[Path | str] | None = None,
    shard_rows: int = 5000,
    test_fraction: float = 0.0,
    seed: int = 0,
    batch_rows: int = 5_000,
) -> tuple[dict[str, Path], int]:
    """Export the selection table at ``selected_path``: its ``keep`` rows (every row with
    ``include_dropped``), read a batch at a time. ``kept_shards``: take the kept rows from these
    Parquet files instead (e.g. the R-Tuning transform's ``transformed/part-*.parquet``), then the
    dropped rows from the selection file when ``include_dropped``; the columns are the union of
    both (as ``pl.concat(..., how="diagonal_relaxed")``). The card's selection section and plots
    come from the selection file. Returns (paths as ``export_dataset`` gives them, rows exported)."""
    selected_path, out = Path(selected_path), Path(out_dir)
    selected = card_columns(selected_path, with_id=test_fraction > 0)  # ids: 40% of it at 10M rows
    if kept_shards is None:
        keep = None if include_dropped else True
        rows = selected if include_dropped else selected.filter(pl.col("keep"))
        schema = pl.from_arrow(pq.read_schema(selected_path).empty_table())
        batches: Iterable[pl.DataFrame] = _batches(selected_path, keep, batch_rows, None)
    else:
        sources: list[tuple[Path, bool | None]] = [(Path(p), None) for p in kept_shards]
        if include_dropped:
            sources.append((selected_path, False))
        parts = [pl.from_arrow(pq.read_schema(p).empty_table()) for p, _ in sources]
        schema = pl.concat(parts, how="diagonal_relaxed") if parts else pl.DataFrame()
        shorts = [card_columns(p, with_id=test_fraction > 0) for p, _ in sources[: len(kept_shards)]]
        if include_dropped:
            shorts.append(selected.filter(~pl.col("keep")))
        rows = pl.concat(shorts, how="diagonal_relaxed") if shorts else selected.clear()
        batches = (b for p, keep in sources for b in _batches(p, keep, batch_rows, schema))
    paths = export_rows(batches, rows, schema, out, card_info=card_info, selected=selected,
                        shard_rows=shard_rows, test_fraction=test_fraction, seed=seed)
    return paths, rows.height
