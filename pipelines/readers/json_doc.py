"""A ``.json`` file: an array of records, one object (maybe ``{"data": [...]}``), or JSON lines.

    for rec in iter_json_doc(Path("data.json")): rec.value, rec.line

An array is decoded element by element so a reject can name its line; a malformed array cannot
be re-synchronised, so it is fatal (:class:`InputError`). An element that holds NaN/Infinity or
nests too deep is a reject (see :mod:`pipelines.readers.json_values`), and so is one holding a
byte that does not decode (fatal with ``strict_encoding``). The document is read whole.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from pipelines.readers.formats import SIGNATURES
from pipelines.readers.json_values import decode_value
from pipelines.readers.jsonl import iter_jsonl
from pipelines.readers.records import MAX_LINE_BYTES, InputError, Record
from pipelines.readers.text import ESCAPED_BYTE, Text, bad_byte, decode_file

_WS = " \t\r\n"


def iter_json_doc(path: Path, strict_encoding: bool = False, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[Record]:
    doc = decode_file(path, strict_encoding)
    if not doc.text.lstrip(_WS).startswith("["):
        # One object per line is common under a .json name; a single object (maybe {"data": [...]}) is not.
        records = list(iter_jsonl(path, strict_encoding, max_line_bytes))
        if len(records) > 1 and sum(r.parse_error is None for r in records) > len(records) // 2:
            yield from records
            return
    yield from _iter_document(path, doc)


def _line(text: str, pos: int) -> int:
    return 1 + text.count("\n", 0, pos)


def _iter_document(path: Path, doc: Text) -> Iterator[Record]:
    text = doc.text
    dirty = ESCAPED_BYTE.search(text) is not None  # any byte that did not decode: check each record
    pos = len(text) - len(text.lstrip(_WS))
    if text.startswith("{", pos):
        try:
            obj, _, problem = decode_value(text)
        except json.JSONDecodeError as e:
            raise InputError(path, f"malformed JSON: {e.msg} (column {e.colno})", line=e.lineno) from None
        # {"data": [...]} / {"train": [...]}: one list of records under a single key.
        lists = [k for k, v in obj.items() if isinstance(v, list)] if isinstance(obj, dict) else []
        if problem is None and len(lists) == 1 and not any(k in obj for _, sig in SIGNATURES for k in sig):
            for i, value in enumerate(obj[lists[0]], start=1):
                rec = Record(value, None, i)
                yield _checked(rec, Text(json.dumps(value, ensure_ascii=False), doc.encoding, 0), offsets=False) \
                    if dirty else rec
            return
        raw = text[pos:] if problem else None
        yield _checked(Record(obj, _line(text, pos), 1, raw=raw, parse_error=problem), doc)
        return
    if not text.startswith("[", pos):
        raise InputError(path, "malformed JSON: expected an array '[...]' of records", line=_line(text, pos))
    pos += 1
    n = 0
    while True:
        while pos < len(text) and text[pos] in _WS:
            pos += 1
        if text.startswith("]", pos):
            return
        if n and not text.startswith(",", pos):
            raise InputError(path, "malformed JSON: expected ',' or ']' between records", line=_line(text, pos))
        if n:
            pos += 1
            while pos < len(text) and text[pos] in _WS:
                pos += 1
        try:
            value, end, problem = decode_value(text, pos)
        except json.JSONDecodeError as e:
            raise InputError(path, f"malformed JSON: {e.msg} (column {e.colno})", line=e.lineno) from None
        n += 1
        rec = Record(value, _line(text, pos), n, raw=text[pos:end], parse_error=problem)
        yield _checked(rec, doc, pos, end) if dirty else rec
        pos = end


def _checked(rec: Record, doc: Text, start: int = 0, end: int | None = None, offsets: bool = True) -> Record:
    """``rec``, or an encoding reject in its place when its source ``doc.text[start:end]`` holds a
    byte that did not decode (``offsets`` False: the text is not the file's, so no byte offset)."""
    bad = bad_byte(doc, start, end)
    if bad is None:
        return rec
    reason, offset = bad
    raw = ESCAPED_BYTE.sub("\ufffd", doc.text[start:end])
    return Record(None, rec.line, rec.record, raw=raw, parse_error=reason,
                  byte_offset=offset if offsets else None)
