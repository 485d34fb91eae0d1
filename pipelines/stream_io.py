"""Examples in chunks: :func:`iter_examples` is :func:`pipelines.io.read_examples` for inputs bigger
than memory.

    from pipelines.stream_io import iter_examples
    for part in iter_examples("big.jsonl", chunk_rows=50_000):
        part.table, part.rejects, part.counts   # one ReadResult per chunk, in file order

Same formats, same rejects rules and same reject fields (file, line, record, byte offset) as
``read_examples``: the chunks concatenated give its table and rejects. JSON lines (.jsonl,
.ndjson) are read in blocks of lines, so memory holds one block and one chunk, not the file; the
format is decided from the first records as ``read_examples`` does. Other containers (a JSON
array, Parquet, a saved HF dataset) and ``strict_encoding`` read through
:func:`pipelines.io.iter_records` and are cut into chunks afterwards.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import polars as pl

from pipelines.io import (
    _BOM,
    _DETECT_RECORDS,
    InputError,
    ReadResult,
    _decide_format,
    _iter_jsonl,
    _Record,
    convert_records,
    iter_records,
)
from pipelines.shards import atomic_write_parquet, remove_surplus_shards, shard_path

BLOCK_BYTES = 16 << 20  # JSON lines read per block


def _jsonl_blocks(path: Path, strict_encoding: bool, block_bytes: int) -> Iterator[_Record]:
    """JSON lines records block by block, with line, record and byte offset as in the whole file."""
    line_base = rec_base = byte_base = last = 0
    anything = False
    with open(path, "rb") as f:
        while lines := f.readlines(block_bytes):
            data = b"".join(lines)
            if byte_base and data.startswith(_BOM):  # only the file's first bytes may be a BOM
                data = b" " + data[len(_BOM) :]  # keep offsets; the line is then not JSON, as before
            anything = anything or bool(data.removeprefix(_BOM).strip())
            for rec in _iter_jsonl(path, data, strict_encoding):
                rec.line = None if rec.line is None else rec.line + line_base
                rec.record += rec_base
                if rec.byte_offset is not None:
                    rec.byte_offset += byte_base
                last = rec.record
                yield rec
            rec_base = last
            line_base += len(lines)
            byte_base += len(data)
    if not anything:
        raise InputError(path, "empty file: no records to read")


def _records(path: Path, split: str | None, strict_encoding: bool, block_bytes: int) -> Iterator[_Record]:
    if path.is_file() and path.suffix in (".jsonl", ".ndjson") and not strict_encoding:
        return _jsonl_blocks(path, strict_encoding, block_bytes)
    if not path.exists():
        raise InputError(path, "file not found")
    return iter_records(path, split, strict_encoding)


def iter_examples(
    path: Path | str,
    fmt: str = "auto",
    split: str | None = None,
    source: str | None = None,
    strict_encoding: bool = False,
    chunk_rows: int = 50_000,
    block_bytes: int = BLOCK_BYTES,
) -> Iterator[ReadResult]:
    """``read_examples`` by chunks of at most ``chunk_rows`` records (see the module docstring)."""
    if chunk_rows <= 0:
        raise ValueError(f"chunk_rows must be positive, got {chunk_rows}")
    path = Path(path)
    records = _records(path, split, strict_encoding, block_bytes)
    head = list(itertools.islice(records, max(chunk_rows, _DETECT_RECORDS)))
    if not head:
        raise InputError(path, "empty: no records to read")
    fmt = _decide_format(path, head, fmt)
    source = source if source is not None else str(path)
    stream = itertools.chain(head, records)
    while chunk := list(itertools.islice(stream, chunk_rows)):
        yield convert_records(path, chunk, fmt, source)


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
            atomic_write_parquet(whole.slice(0, self.shard_size).rechunk(), shard_path(self.folder, self.shards))
            self.shards += 1
            rest = whole.slice(self.shard_size)
            self._buffer, self._buffered = [rest], rest.height

    def close(self) -> int:
        """Write the last (partial) shard; an empty input still gets one shard. Returns the shard count."""
        if self._buffered or self.shards == 0:
            whole = pl.concat(self._buffer, how="vertical") if self._buffer else pl.DataFrame()
            atomic_write_parquet(whole.rechunk(), shard_path(self.folder, self.shards))
            self.shards += 1
        self._buffer, self._buffered = [], 0
        remove_surplus_shards(self.folder, self.shards)
        return self.shards
