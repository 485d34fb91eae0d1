"""Plain passages for the generators: ``.txt`` (one passage a line) or records with a text field,
or a folder of such files (every ``.txt``, ``.jsonl``, ``.json`` and ``.parquet`` under it, in
sorted order).

    res = read_passages("data/wiki.txt")      # res.table: text_id, text, source, meta
    res = read_passages("my_texts/")          # text_id: <path in the folder>:<record>

``text_id`` is ``<file name>:<record>``, stable. A passage shorter than ``min_chars`` after
stripping is a reject, not dropped; so is a line or record with bytes that do not decode (fatal
for the file with ``strict_encoding``) or a line longer than ``max_line_bytes``. A file where no
passage is usable is an error (:class:`NoRowsError`, or InputError when no record parses).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Mapping
from pathlib import Path

import polars as pl

from pipelines.readers.containers import iter_records
from pipelines.readers.formats import extra_fields, string_field
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
from pipelines.readers.text import iter_lines

SCHEMA = {"text_id": pl.Utf8, "text": pl.Utf8, "source": pl.Utf8, "meta": pl.Utf8}
FOLDER_SUFFIXES = (".txt", ".jsonl", ".json", ".parquet")


def _txt_records(path: Path, strict_encoding: bool, max_line_bytes: int) -> Iterator[Record]:
    for n, line in enumerate(iter_lines(path, strict_encoding, max_line_bytes), 1):
        yield Record(None if line.error else line.text, line.lineno, n, raw=line.text, parse_error=line.error,
                     byte_offset=line.byte_offset)


def read_passages(
    path: Path | str,
    text_field: str = "text",
    min_chars: int = 1,
    strict_encoding: bool = False,
    max_line_bytes: int = MAX_LINE_BYTES,
    max_records: int | None = None,
    id_prefix: str | None = None,
) -> ReadResult:
    """Passages as a table (``text_id``, ``text``, ``source``, ``meta``) with rejects and counts;
    ``max_records``: read only that many records (a bounded check of the input); ``id_prefix``: the
    text ids' file part (default: the file's name)."""
    path = Path(path)
    if path.is_dir():
        return _read_folder(path, text_field, min_chars, strict_encoding, max_line_bytes, max_records)
    if path.suffix == ".txt":
        records = _txt_records(path, strict_encoding, max_line_bytes)
    else:
        records = iter_records(path, strict_encoding=strict_encoding, max_line_bytes=max_line_bytes)
    source = display_path(path)
    rows, rejects, n, parse_errors, first_error = [], [], 0, 0, None
    for rec in itertools.islice(records, max_records):
        n += 1
        try:
            if rec.parse_error:
                first_error, parse_errors = first_error or rec, parse_errors + 1
                raise RowError(rec.error_field, rec.parse_error)
            if isinstance(rec.value, str):
                passage, meta = rec.value, {}
            elif isinstance(rec.value, Mapping):
                passage, meta = string_field(rec.value, text_field), extra_fields(rec.value, (text_field,))
            else:
                raise RowError(None, f"record must be a JSON object, got {type(rec.value).__name__}")
            if len(passage.strip()) < min_chars:
                raise RowError(text_field, f"shorter than {min_chars} characters")
        except RowError as e:
            rejects.append(reject(path, rec, e.field, e.reason))
            continue
        rows.append({"text_id": f"{id_prefix or path.name}:{rec.record}", "text": passage.strip(), "source": source,
                     "meta": json.dumps(meta, sort_keys=True, ensure_ascii=False)})
    if n == 0:
        raise InputError(path, "empty: no passages to read")
    if first_error is not None and parse_errors == n:
        raise InputError(path, f"no record parses; first error: {first_error.parse_error}", line=first_error.line)
    counts = {"records": n, "passages": len(rows), "rejects": len(rejects)}
    if not rows:
        raise NoRowsError(path, {**counts, "rejects_by_reason": reasons(rejects)}, rejects, what="passages")
    table = pl.DataFrame(rows, schema=SCHEMA)
    return ReadResult(table, rejects, counts, "text")


def _read_folder(folder: Path, text_field, min_chars, strict_encoding, max_line_bytes, max_records) -> ReadResult:
    """Every passage file under ``folder``, in sorted order (``max_records``: over all of them);
    a text id carries the file's path in the folder, so two files of one name stay apart."""
    files = sorted(f for f in folder.rglob("*") if f.is_file() and f.suffix in FOLDER_SUFFIXES)
    if not files:
        raise InputError(folder, f"no passage files ({', '.join(FOLDER_SUFFIXES)}) in this folder")
    parts: list[ReadResult] = []
    for f in files:
        left = None if max_records is None else max_records - sum(p.counts["records"] for p in parts)
        if left == 0:
            break
        parts.append(read_passages(f, text_field, min_chars, strict_encoding, max_line_bytes, left,
                                   id_prefix=f.relative_to(folder).as_posix()))
    counts = {k: sum(p.counts[k] for p in parts) for k in ("records", "passages", "rejects")}
    return ReadResult(pl.concat([p.table for p in parts]), [r for p in parts for r in p.rejects],
                      {**counts, "files": len(parts)}, "text")
