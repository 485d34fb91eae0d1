"""What every reader shares: the record, the read result, the errors and the reject record.

A reader turns a file into :class:`Record` s (one per line, array element or row); a record that
cannot become an example becomes a reject dict (:func:`reject`), counted, never dropped.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

RAW_CHARS = 2000  # how much of a rejected record the rejects file keeps
MAX_LINE_BYTES = 64 << 20  # io.max_line_bytes: a longer line is a reject, never held in memory whole


class InputError(ValueError):
    """A problem that makes a whole input file unusable; the message names file, line and field."""

    def __init__(self, file: Path | str, reason: str, line: int | None = None, field: str | None = None):
        self.file, self.reason, self.line, self.field = str(file), reason, line, field
        where = self.file + (f":{line}" if line is not None else "")
        what = f" field {field!r}:" if field else ""
        super().__init__(f"{where}:{what} {reason}")


class NoRowsError(InputError):
    """Every record of a file was rejected: ``file: 0 of N rows read: <reasons>``. Carries the
    ``rejects`` (when the reader held them) and ``counts`` so a caller can still write them."""

    def __init__(self, file: Path | str, counts: dict[str, Any], rejects: list[dict[str, Any]] | None = None,
                 what: str = "rows"):
        self.counts, self.rejects = counts, rejects if rejects is not None else []
        reasons = Counter(counts.get("rejects_by_reason") or {})
        top = "; ".join(f"{r.replace(': ', ' ', 1)} ({n})" for r, n in reasons.most_common(3))
        more = f"; and {len(reasons) - 3} other reasons" if len(reasons) > 3 else ""
        super().__init__(file, f"0 of {counts['records']} {what} read: {top}{more}")

    def __str__(self) -> str:  # "data.parquet: 0 of 2 rows read: ..." (no empty field part)
        return f"{self.file}: {self.reason}"


class RowError(ValueError):
    """One record cannot become an example; becomes a reject (raised by the row mappers)."""

    def __init__(self, field: str | None, reason: str):
        self.field, self.reason = field, reason
        super().__init__(reason)


@dataclass
class ReadResult:
    """What a read produced. ``counts['records'] == counts['examples'] + counts['rejects']``."""

    table: pl.DataFrame
    rejects: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)
    fmt: str = ""


@dataclass
class Record:
    value: Any  # the parsed record, or None when the line did not parse
    line: int | None
    record: int
    raw: str | None = None  # the source text, kept for rejects
    parse_error: str | None = None
    error_field: str | None = None  # the field a parse_error is about (a Parquet column), if any
    byte_offset: int | None = None  # where in the file an encoding error sits
    file: Path | None = None  # the file it came from, when not the path read (a Parquet folder)
    row: int | None = None  # 1-based position in ``file`` (default: ``record``)


def display_path(path: Path | str) -> str:
    """The path as rows and rejects record it: relative to the working directory, or just the file
    name when it lies outside it -- never an absolute path (it would leak the machine's layout
    into a dataset)."""
    full = os.path.normpath(os.path.abspath(path))
    rel = os.path.relpath(full, os.getcwd())
    return Path(path).name if rel == os.pardir or rel.startswith(os.pardir + os.sep) else rel


def not_utf8(byte: int, offset: int | None = None, encoding: str = "UTF-8") -> str:
    """The reason for a byte that is not valid text: with its offset for a fatal error; without it
    for a reject (which carries ``byte_offset`` as a field, so rejects tally by reason)."""
    at = f" at byte offset {offset}" if offset is not None else ""
    return f"not valid {encoding} (byte 0x{byte:02x}{at}); re-encode the file as UTF-8"


def json_safe(value: Any) -> Any:
    """``value`` if it is JSON, else its ``str``."""
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError, RecursionError):
        return str(value)


def reject(path: Path, rec: Record, field_name: str | None, reason: str) -> dict[str, Any]:
    """The reject record of ``rec``: ``{file, line, record, row, byte_offset, field, reason, raw}``."""
    if rec.raw is not None:
        raw = rec.raw
    else:
        try:
            raw = json.dumps(json_safe(rec.value), ensure_ascii=False, default=str)
        except (ValueError, RecursionError):
            raw = "<not representable>"
    return {
        "file": display_path(rec.file or path),
        "line": rec.line,
        "record": rec.record,
        "row": rec.row if rec.row is not None else rec.record,
        "byte_offset": rec.byte_offset,
        "field": field_name,
        "reason": reason,
        "raw": raw[:RAW_CHARS],
    }


def reasons(rejects: Iterable[dict[str, Any]]) -> dict[str, int]:
    """``field: reason`` -> count, in order of first appearance."""
    return dict(Counter(f"{r['field']}: {r['reason']}" if r["field"] else r["reason"] for r in rejects))
