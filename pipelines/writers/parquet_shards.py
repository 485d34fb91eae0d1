"""Numbered Parquet shards (``part-00000.parquet`` ...) from rows that arrive in pieces.

    w = ShardWriter(folder, shard_size=5000); w.add(table) ...; n_shards = w.close()
    w = ShardWriter(folder, 5000, start=12)     # one source's shards from part-00012 on (collect)
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from pipelines.shards import remove_surplus_shards, shard_path, write_parquet_if_changed


class ShardWriter:
    """``write_shards`` for a table that arrives in pieces: ``add`` buffers rows and writes each
    full shard (atomic) as it fills; ``close`` writes the rest and deletes surplus old shards.
    The shards are the ones ``write_shards`` gives for the concatenated pieces.

    ``start``: the index of the first shard (several writers fill one folder, one after another);
    ``written``: (index, rows, whether the file changed) per shard -- a shard that already held the
    same bytes is left alone (``write_parquet_if_changed``)."""

    def __init__(self, folder: Path, shard_size: int, start: int = 0):
        if shard_size <= 0:
            raise ValueError(f"shard_size must be positive, got {shard_size}")
        self.folder, self.shard_size, self.start = Path(folder), shard_size, start
        self.shards = self.rows = 0
        self.written: list[tuple[int, int, bool]] = []
        self._buffer: list[pl.DataFrame] = []
        self._buffered = 0

    def _write(self, table: pl.DataFrame) -> None:
        index = self.start + self.shards
        changed = write_parquet_if_changed(table.rechunk(), shard_path(self.folder, index))
        self.written.append((index, table.height, changed))
        self.shards += 1

    def add(self, table: pl.DataFrame) -> None:
        self._buffer.append(table)
        self._buffered += table.height
        self.rows += table.height
        while self._buffered >= self.shard_size:
            whole = pl.concat(self._buffer, how="vertical")
            self._write(whole.slice(0, self.shard_size))
            rest = whole.slice(self.shard_size)
            self._buffer, self._buffered = [rest], rest.height

    def close(self, empty_shard: bool = True, remove_surplus: bool = True) -> int:
        """Write the last (partial) shard; an empty input still gets one shard unless not
        ``empty_shard``. Deletes old shards past the last unless not ``remove_surplus`` (another
        writer goes on after it). Returns the number of shards this writer wrote."""
        if self._buffered or (self.shards == 0 and empty_shard):
            whole = pl.concat(self._buffer, how="vertical") if self._buffer else pl.DataFrame()
            self._write(whole)
        self._buffer, self._buffered = [], 0
        if remove_surplus:
            remove_surplus_shards(self.folder, self.start + self.shards)
        return self.shards
