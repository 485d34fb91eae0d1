"""Numbered Parquet shards (``part-00000.parquet`` ...) from rows that arrive in pieces.

    w = ShardWriter(folder, shard_size=5000); w.add(table) ...; n_shards = w.close()
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from pipelines.shards import remove_surplus_shards, shard_path, write_parquet_if_changed


class ShardWriter:
    """``write_shards`` for a table that arrives in pieces: ``add`` buffers rows and writes each
    full shard (atomic) as it fills; ``close`` writes the rest and deletes surplus old shards.
    The shards are the ones ``write_shards`` gives for the concatenated pieces."""

    def __init__(self, folder: Path, shard_size: int):
        if shard_size <= 0:
            raise ValueError(f"shard_size must be positive, got {shard_size}")
        self.folder, self.shard_size = Path(folder), shard_size
        self.shards = self.rows = 0
        self._buffer: list[pl.DataFrame] = []
        self._buffered = 0

    def add(self, table: pl.DataFrame) -> None:
        self._buffer.append(table)
        self._buffered += table.height
        self.rows += table.height
        while self._buffered >= self.shard_size:
            whole = pl.concat(self._buffer, how="vertical")
            write_parquet_if_changed(whole.slice(0, self.shard_size).rechunk(), shard_path(self.folder, self.shards))
            self.shards += 1
            rest = whole.slice(self.shard_size)
            self._buffer, self._buffered = [rest], rest.height

    def close(self) -> int:
        """Write the last (partial) shard; an empty input still gets one shard. Returns the shard count."""
        if self._buffered or self.shards == 0:
            whole = pl.concat(self._buffer, how="vertical") if self._buffer else pl.DataFrame()
            write_parquet_if_changed(whole.rechunk(), shard_path(self.folder, self.shards))
            self.shards += 1
        self._buffer, self._buffered = [], 0
        remove_surplus_shards(self.folder, self.shards)
        return self.shards
