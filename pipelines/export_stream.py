""":func:`pipelines.export.export_dataset` for a selection table bigger than memory.

    from pipelines.export_stream import export_selected
    paths = export_selected(run.selected, run.dataset, card_info=..., test_fraction=0.1, seed=0)

Reads the selection Parquet file a batch at a time, keeps the ``keep`` rows (all with
``include_dropped``), adds ``messages`` per batch and appends to the Parquet shards and JSON
lines as it goes; the HF dataset is then streamed from those shards a batch at a time. The seeded
test split and the card come from the selection table without its texts. The files are the ones
``export_dataset`` writes for the same rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from pipelines.export import (
    CARD_KEYS,
    SplitWriter,
    dataset_card_text,
    export_table,
    plot_score,
    score_columns,
    split_train_test,
)
from pipelines.shards import atomic_write_text, read_short_columns


def export_selected(
    selected_path: Path | str,
    out_dir: Path | str,
    *,
    card_info: Mapping[str, Any],
    include_dropped: bool = False,
    shard_rows: int = 5000,
    test_fraction: float = 0.0,
    seed: int = 0,
    batch_rows: int = 20_000,
) -> tuple[dict[str, Path], int]:
    """Export the selection table at ``selected_path`` (see the module docstring).
    Returns (paths as ``export_dataset`` gives them, rows exported)."""
    if shard_rows <= 0:
        raise ValueError(f"shard_rows must be positive, got {shard_rows}")
    unknown = set(card_info) - CARD_KEYS
    if unknown:
        raise ValueError(f"unknown card_info keys {sorted(unknown)}; expected some of {sorted(CARD_KEYS)}")
    selected_path, out = Path(selected_path), Path(out_dir)
    selected = read_short_columns(selected_path)
    chosen = selected if include_dropped else selected.filter(pl.col("keep"))
    train_ids, test_ids = split_train_test(chosen.select("id"), test_fraction, seed)
    is_test = set(test_ids["id"].to_list())

    # pre_buffer=False: with it, pyarrow keeps the buffers of row groups already read (RSS grew
    # by 470 MB over a 1M-row file); without it, memory stays at one batch.
    pf = pq.ParquetFile(selected_path, pre_buffer=False)
    empty = export_table(pl.from_arrow(pf.schema_arrow.empty_table()))
    writers = {"train": SplitWriter(out, shard_rows)}
    if test_fraction > 0:
        writers["test"] = SplitWriter(out / "test", shard_rows)
    try:
        for batch in pf.iter_batches(batch_size=batch_rows):
            part = pl.from_arrow(batch)
            if not include_dropped:
                part = part.filter(pl.col("keep"))
            if part.height == 0:
                continue
            rows = export_table(part)
            if "test" in writers:
                test = rows["id"].is_in(list(is_test))
                writers["test"].add(rows.filter(test))
                rows = rows.filter(~test)
            writers["train"].add(rows)
        paths: dict[str, Path] = {"dir": out, **writers["train"].close(empty)}
        if "test" in writers:
            paths |= {f"test_{k}": v for k, v in writers["test"].close(empty).items()}
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    plots = {}
    if "keep" in selected.columns:
        plots = {c: plot_score(selected, c, out / "plots" / f"{c}.png").relative_to(out).as_posix()
                 for c in score_columns(selected)}
    # The card reads the exported rows' column names, count, sources, scores and meta: not the texts.
    card_rows = chosen.with_columns([pl.lit(None).alias(c) for c in empty.columns if c not in chosen.columns])
    card_rows = card_rows.select(empty.columns)
    splits = {"train": train_ids.height, "test": test_ids.height} if test_fraction > 0 else None
    card = out / "README.md"
    atomic_write_text(card, dataset_card_text(card_rows, card_info, selected, plots, splits=splits))
    return {**paths, "card": card}, chosen.height
