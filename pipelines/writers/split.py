"""One split of an export under ``out``: Parquet shards, ``data.jsonl`` and the HF folder ``hf/``.

    w = SplitWriter(out, shard_rows=5000); w.add(rows) ...; paths = w.close(empty_rows)

Rows arrive in pieces (a whole table, or batch by batch); shards are written as they fill, JSON
lines go to a temp file and the HF dataset to a temp folder, both put in place at close.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import polars as pl

from pipelines.writers.hf_folder import HFFolderWriter, hf_features
from pipelines.writers.jsonl import JsonlWriter
from pipelines.writers.parquet_shards import ShardWriter
from pipelines.writers.rows import SLICE_ROWS


class SplitWriter:
    def __init__(self, out: Path, shard_rows: int, slice_rows: int = SLICE_ROWS):
        self.out = out
        self.parquet = ShardWriter(out / "parquet", shard_rows)
        self.jsonl = JsonlWriter(out / "data.jsonl", slice_rows)
        self.hf: HFFolderWriter | None = None  # made with the first rows: their types are its features
        # JSON lines and the HF dataset are written in a thread while this one writes the Parquet
        # shards (polars and pyarrow release the GIL): two cores for the three copies. One batch
        # in flight keeps the order.
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="jsonl-hf")
        self._copies_done: Future | None = None

    def add(self, rows: pl.DataFrame) -> None:
        if self.hf is None:
            self.hf = HFFolderWriter(self.out / "hf", hf_features(rows))
        self._wait_copies()
        self._copies_done = self._pool.submit(self._copies, rows)
        self.parquet.add(rows)

    def _copies(self, rows: pl.DataFrame) -> None:
        self.jsonl.add(rows)
        self.hf.add(rows.to_arrow(compat_level=pl.CompatLevel.oldest()))

    def _wait_copies(self) -> None:
        if self._copies_done is not None:
            done, self._copies_done = self._copies_done, None
            done.result()  # its error, if any, is raised here

    def close(self, empty: pl.DataFrame) -> dict[str, Path]:
        """Finish the files; ``empty`` (the exported schema) types them when no rows came."""
        self._wait_copies()
        self._pool.shutdown()
        jsonl = self.jsonl.close()
        if self.parquet.rows == 0:
            self.parquet.add(empty)
        self.parquet.close()  # an empty split still gets one shard (its schema)
        if self.hf is None:
            self.hf = HFFolderWriter(self.out / "hf", hf_features(empty))
        self.hf.close()
        return {"parquet": self.out / "parquet", "jsonl": jsonl, "hf": self.out / "hf"}

    def abort(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.jsonl.abort()
        if self.hf is not None:
            self.hf.abort()
