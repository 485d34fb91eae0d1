"""One split of an export under ``out``: Parquet shards, ``data.jsonl`` and the HF folder ``hf/``.

    w = SplitWriter(out, shard_rows=5000); w.add(rows) ...; paths = w.close(empty_rows)

Rows arrive in pieces (a whole table, or batch by batch); shards are written as they fill, JSON
lines go to a temp file renamed at close, then the HF dataset is streamed from the shards.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import polars as pl

from pipelines.shards import SHARD_GLOB
from pipelines.writers.hf_folder import hf_features, save_parquet_shards_to_disk
from pipelines.writers.jsonl import JsonlWriter
from pipelines.writers.parquet_shards import ShardWriter
from pipelines.writers.rows import SLICE_ROWS


class SplitWriter:
    def __init__(self, out: Path, shard_rows: int, slice_rows: int = SLICE_ROWS):
        self.out = out
        self.parquet = ShardWriter(out / "parquet", shard_rows)
        self.jsonl = JsonlWriter(out / "data.jsonl", slice_rows)
        self.schema: pl.DataFrame | None = None
        # JSON lines are written in a thread while this one writes the Parquet shards (both polars,
        # which releases the GIL): two cores for the two copies. One batch in flight keeps the order.
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="jsonl")
        self._jsonl_done: Future | None = None

    def add(self, rows: pl.DataFrame) -> None:
        if self.schema is None:
            self.schema = rows.clear()
        self._wait_jsonl()
        self._jsonl_done = self._pool.submit(self.jsonl.add, rows)
        self.parquet.add(rows)

    def _wait_jsonl(self) -> None:
        if self._jsonl_done is not None:
            done, self._jsonl_done = self._jsonl_done, None
            done.result()  # its error, if any, is raised here

    def close(self, empty: pl.DataFrame) -> dict[str, Path]:
        """Finish the files; ``empty`` (the exported schema) types them when no rows came."""
        self._wait_jsonl()
        self._pool.shutdown()
        jsonl = self.jsonl.close()
        if self.parquet.rows == 0:
            self.parquet.add(empty)
        self.parquet.close()  # an empty split still gets one shard (its schema)
        # The HF dataset from the shards just written, a record batch at a time (not from the
        # in-memory table, and not through a memory-mapped copy, whose pages all become resident).
        hf = self.out / "hf"
        shards = sorted((self.out / "parquet").glob(SHARD_GLOB))
        save_parquet_shards_to_disk(shards, hf_features(self.schema if self.schema is not None else empty), hf)
        return {"parquet": self.out / "parquet", "jsonl": jsonl, "hf": hf}

    def abort(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.jsonl.abort()
