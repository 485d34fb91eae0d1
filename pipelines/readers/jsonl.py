"""JSON lines (``.jsonl``, ``.ndjson``): one record a line, streamed; memory holds one line.

    for rec in iter_jsonl(Path("data.jsonl")): rec.value, rec.line, rec.parse_error

A line that does not parse, holds NaN/Infinity, nests too deep, is longer than
``max_line_bytes`` or holds bytes that do not decode is a record with a ``parse_error`` (a
reject of its own); every other line is read (see :mod:`pipelines.readers.text`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from pipelines.readers.json_values import decode_value
from pipelines.readers.records import MAX_LINE_BYTES, Record
from pipelines.readers.text import iter_lines


def iter_jsonl(
    path: Path, strict_encoding: bool = False, max_line_bytes: int = MAX_LINE_BYTES, buffer: int = 1 << 20
) -> Iterator[Record]:
    for n, line in enumerate(iter_lines(path, strict_encoding, max_line_bytes, buffer), start=1):
        if line.error is not None:
            yield Record(None, line.lineno, n, raw=line.text, parse_error=line.error, byte_offset=line.byte_offset)
            continue
        try:
            value, _, problem = decode_value(line.text)
        except json.JSONDecodeError as e:
            value, problem = None, f"malformed JSON line: {e.msg} (column {e.colno})"
        yield Record(value, line.lineno, n, raw=line.text, parse_error=problem)
