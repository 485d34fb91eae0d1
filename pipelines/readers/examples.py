"""Records -> example tables: the one read path, streamed.

    for part in iter_examples("big.jsonl", chunk_rows=50_000): part.table, part.rejects, part.counts
    res = read_examples("data.jsonl")          # iter_examples run to the end, concatenated
    res = check_input("data.jsonl")            # the first 1000 rows only: fails fast, reads little

The format is decided from the first records (:func:`~pipelines.readers.formats.decide_format`);
each chunk holds at most ``chunk_rows`` records, with every bad one as a reject. A file whose
every record is rejected raises :class:`NoRowsError` (``file: 0 of N rows read: <reasons>``)
after its chunks (read_examples' error carries the rejects, so a caller can write them first).
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from pipelines.readers.containers import iter_records
from pipelines.readers.formats import DETECT_RECORDS, decide_format, to_example
from pipelines.readers.json_values import TOO_DEEP
from pipelines.readers.passages import read_passages
from pipelines.readers.records import (
    MAX_LINE_BYTES,
    InputError,
    NoRowsError,
    ReadResult,
    Record,
    RowError,
    display_path,
    reasons,
    reject,
)
from pipelines.schema import to_table

BLOCK_BYTES = 1 << 20  # read buffer of a JSON lines file (lines are read one at a time)
READ_CHUNK = 50_000  # records per chunk when read_examples runs iter_examples


def convert_records(path: Path, records: Sequence[Record], fmt: str, source: str) -> ReadResult:
    """Records of one file in a known format -> examples, with a reject for each bad record."""
    rows, rejects = [], []
    for rec in records:
        if rec.parse_error:
            rejects.append(reject(path, rec, rec.error_field, rec.parse_error))
            continue
        try:
            rows.append(to_example(rec.value, fmt, source))
        except RowError as e:
            rejects.append(reject(path, rec, e.field, e.reason))
        except RecursionError:
            rejects.append(reject(path, rec, None, TOO_DEEP))
    counts = {
        "records": len(records),
        "examples": len(rows),
        "rejects": len(rejects),
        "rejects_by_reason": reasons(rejects),
    }
    return ReadResult(to_table(rows), rejects, counts, fmt)


def add_counts(total: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    """Counts of two reads added (``rejects_by_reason`` keeps first-seen order)."""
    by_reason = Counter(total.get("rejects_by_reason") or {})
    by_reason.update(part.get("rejects_by_reason") or {})
    keys = ("records", "examples", "rejects")
    return {**{k: total.get(k, 0) + part.get(k, 0) for k in keys}, "rejects_by_reason": dict(by_reason)}


def iter_examples(
    path: Path | str,
    fmt: str = "auto",
    split: str | None = None,
    source: str | None = None,
    strict_encoding: bool = False,
    chunk_rows: int = 50_000,
    block_bytes: int = BLOCK_BYTES,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> Iterator[ReadResult]:
    """Examples of ``path`` by chunks of at most ``chunk_rows`` records (see the module docstring).

    ``fmt``: one of FORMATS or "auto"; ``split``: which split of a saved DatasetDict; ``source``:
    the ``source`` column (default: the path relative to the working directory, or its name when
    outside it); ``strict_encoding``: bytes that do not decode fail the whole file instead of
    their record; ``max_line_bytes``: a longer line (JSON lines) is a reject."""
    if chunk_rows <= 0:
        raise ValueError(f"chunk_rows must be positive, got {chunk_rows}")
    path = Path(path)
    records = iter_records(path, split, strict_encoding, max_line_bytes, buffer=block_bytes)
    head = list(itertools.islice(records, max(chunk_rows, DETECT_RECORDS)))
    if not head:
        raise InputError(path, "empty: no records to read")
    fmt = decide_format(path, head, fmt)
    source = source if source is not None else display_path(path)
    stream = itertools.chain(head, records)
    total: dict[str, Any] = {}
    while chunk := list(itertools.islice(stream, chunk_rows)):
        part = convert_records(path, chunk, fmt, source)
        total = add_counts(total, part.counts)
        yield part
    if total["examples"] == 0:
        raise NoRowsError(path, total)


def concat_results(parts: Sequence[ReadResult]) -> ReadResult:
    """Chunks of one read as one result."""
    if len(parts) == 1:
        return parts[0]
    counts: dict[str, Any] = {}
    for p in parts:
        counts = add_counts(counts, p.counts)
    table = pl.concat([p.table for p in parts], how="vertical").rechunk()
    return ReadResult(table, [r for p in parts for r in p.rejects], counts, parts[0].fmt)


def read_examples(
    path: Path | str,
    fmt: str = "auto",
    split: str | None = None,
    source: str | None = None,
    strict_encoding: bool = False,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> ReadResult:
    """Read ``path`` into the example table; bad rows go to ``rejects`` (see :func:`iter_examples`)."""
    parts: list[ReadResult] = []
    try:
        for part in iter_examples(path, fmt, split, source, strict_encoding, READ_CHUNK,
                                  max_line_bytes=max_line_bytes):
            parts.append(part)
    except NoRowsError as e:
        e.rejects = [r for p in parts for r in p.rejects]
        raise
    return concat_results(parts)


def check_input(
    path: Path | str,
    max_rows: int = 1000,
    fmt: str = "auto",
    split: str | None = None,
    strict_encoding: bool = False,
    max_line_bytes: int = MAX_LINE_BYTES,
    passages: bool = False,
    text_field: str = "text",
) -> ReadResult:
    """Validate the first ``max_rows`` records of an input without reading the rest (JSON lines
    and Parquet are streamed; a JSON document is parsed whole): the result of those records, or
    the error the full read would raise for them (InputError, or NoRowsError when none of them
    is usable). ``passages``: check it as :func:`~pipelines.readers.passages.read_passages` reads it."""
    if passages:
        return read_passages(path, text_field, strict_encoding=strict_encoding, max_line_bytes=max_line_bytes,
                             max_records=max_rows)
    chunks = iter_examples(path, fmt, split, None, strict_encoding, max_rows, max_line_bytes=max_line_bytes)
    try:
        part = next(chunks)
    finally:
        chunks.close()
    if part.counts["examples"] == 0:
        raise NoRowsError(path, part.counts, part.rejects)
    return part
