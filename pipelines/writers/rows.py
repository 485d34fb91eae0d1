"""The rows as exported, and the seeded train/test split.

    rows = export_table(table)                 # + messages (TRL chat form), typed even when empty
    is_test = test_mask(rows["id"], 0.1, seed=0)
"""

from __future__ import annotations

import hashlib

import polars as pl

from pipelines.schema import with_messages

MESSAGES_DTYPE = pl.List(pl.Struct({"role": pl.Utf8, "content": pl.Utf8}))
SLICE_ROWS = 20_000  # rows turned into messages / JSON lines at a time (bounds the Python objects)


def export_table(table: pl.DataFrame, slice_rows: int = SLICE_ROWS) -> pl.DataFrame:
    """The rows as exported: the table's columns plus ``messages`` (typed even when empty)."""
    parts = [with_messages(table.slice(lo, slice_rows)).with_columns(pl.col("messages").cast(MESSAGES_DTYPE))
             for lo in range(0, max(table.height, 1), slice_rows)]  # an empty table: one empty part
    return pl.concat(parts, how="vertical", rechunk=False)


def test_mask(ids: pl.Series, test_fraction: float, seed: int = 0) -> pl.Series:
    """True for the ``round(test_fraction * len(ids))`` rows whose hash of (seed, id) is smallest:
    depends only on the ids and the seed, so a rerun (or the rows in another order) splits the same way."""
    if not 0 <= test_fraction < 1:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    n_test = round(test_fraction * len(ids))
    if n_test == 0:
        return pl.Series("test", [False] * len(ids), dtype=pl.Boolean)
    keys = pl.Series([hashlib.sha256(f"{seed}:{i}".encode()).hexdigest() for i in ids])
    return (keys.rank("ordinal") <= n_test).alias("test")


def split_train_test(table: pl.DataFrame, test_fraction: float, seed: int = 0) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A seeded train/test split (:func:`test_mask` on ``id``); each split keeps the table's order."""
    is_test = test_mask(table["id"], test_fraction, seed)
    if not is_test.any():
        return table, table.clear()
    return table.filter(~is_test), table.filter(is_test)
