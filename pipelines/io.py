"""Read instruction data from files into the example table, with every bad row accounted for.

    from pipelines.io import read_examples
    from pipelines.export import write_rejects          # every writer lives in pipelines.export
    res = read_examples("data/target.jsonl")            # format detected from the fields
    res.table, res.rejects, res.counts                   # counts: records = examples + rejects
    write_rejects(res.rejects, "run/rejects-target.jsonl")

    python -m pipelines.io PATH [--format alpaca] [--out table.parquet] [--rejects rejects.jsonl]
        [--strict-encoding]

Containers (from the path): ``.jsonl``/``.ndjson`` (one JSON object a line), ``.json`` (an array
of objects, or JSON lines), ``.parquet`` (a file, or a folder of ``*.parquet``), a folder written
by ``datasets.Dataset.save_to_disk``, ``.txt`` (one passage a line; passages only).

Row formats (``fmt``; ``auto`` picks one per file from the fields of its first records):

| fmt               | fields                                   | -> instruction / context / response |
|-------------------|------------------------------------------|-------------------------------------|
| example           | instruction, response [, context, source, meta] | as named (this project's own rows) |
| alpaca            | instruction, output [, input]            | instruction / input / output        |
| messages          | messages: [{role, content}, ...]          | last user turn / "" / final assistant turn |
| prompt_completion | prompt, completion (strings or messages)  | prompt / "" / completion            |
| qa                | question, answer [, context]             | question / context / answer         |

Fields a format does not use go into ``meta`` (e.g. T0's ``task_type``), so nothing is lost.
Plain passages for the generators (``.txt``, or records with a ``text`` field) are read with
:func:`read_passages` instead.

Bad input. Problems that make the whole file unusable raise :class:`InputError` (a
``ValueError``) whose message names the file, the line and, where one is to blame, the field:
a missing file, an empty file, a ``.json`` file that does not parse, a file where no line
parses or no format fits. Problems with one row -- a required field missing, empty or of the
wrong type, one malformed line in a JSONL file, bytes that are not UTF-8 in one line (JSONL,
``.txt``), one array element (``.json``) or one string cell (Parquet, HF) -- do not stop the
read: the row goes to ``rejects`` as ``{file, line, record, row, byte_offset, field, reason,
raw}`` and is counted; every other row is read. A malformed JSONL line's reason carries the JSON
parser's message and column. ``line`` is the 1-based line where the record starts (None for
Parquet and HF datasets); ``record`` is its 1-based position in what was read, ``row`` its
position in ``file`` (they differ in a folder of Parquet files, where ``file`` is the one file);
``byte_offset`` is where a byte that is not UTF-8 sits in the file (None for other reasons).
``strict_encoding=True`` (``--strict-encoding``; ``io.strict_encoding`` in a run) makes such a
byte fatal for the whole file instead, naming its line and byte offset.
"""

from __future__ import annotations

import argparse
import io
import json
import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from pipelines.schema import make_example, to_table

FORMATS = ("example", "alpaca", "messages", "prompt_completion", "qa")
# Fields whose presence decides the format, in priority order (first match wins).
# This project's own rows come first: an exported row also carries a derived `messages` column,
# and reading it as chat would fold its context into the instruction (and change its id).
_SIGNATURES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("example", ("instruction", "response")),
    ("messages", ("messages",)),
    ("prompt_completion", ("prompt", "completion")),
    ("alpaca", ("instruction", "output")),
    ("qa", ("question", "answer")),
)
_DETECT_RECORDS = 100  # records looked at by format auto-detection
_RAW_CHARS = 2000  # how much of a rejected record the rejects file keeps
_BOM = b"\xef\xbb\xbf"
# What surrogateescape decoding makes of a byte that is not UTF-8 (U+DC80..U+DCFF).
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")


class InputError(ValueError):
    """A problem that makes a whole input file unusable; the message names file, line and field."""

    def __init__(self, file: Path | str, reason: str, line: int | None = None, field: str | None = None):
        self.file, self.reason, self.line, self.field = str(file), reason, line, field
        where = self.file + (f":{line}" if line is not None else "")
        what = f" field {field!r}:" if field else ""
        super().__init__(f"{where}:{what} {reason}")


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
class _Record:
    value: Any  # the parsed record, or None when the line did not parse
    line: int | None
    record: int
    raw: str | None = None  # the source text, kept for rejects
    parse_error: str | None = None
    error_field: str | None = None  # the field a parse_error is about (a Parquet column), if any
    byte_offset: int | None = None  # where in the file an encoding error sits
    file: Path | None = None  # the file it came from, when not the path read (a Parquet folder)
    row: int | None = None  # 1-based position in ``file`` (default: ``record``)


# ---------------------------------------------------------------------------------------------
# Containers: path -> records, with their line numbers


def _read_bytes(path: Path) -> bytes:
    """The file's bytes; fatal errors for a missing or empty file."""
    if not path.exists():
        raise InputError(path, "file not found")
    data = path.read_bytes()
    if not data.removeprefix(_BOM).strip():
        raise InputError(path, "empty file: no records to read")
    return data


def _not_utf8(byte: int, offset: int | None = None) -> str:
    """The reason for a byte that is not UTF-8: with its offset for a fatal error; without it for
    a reject (which carries ``byte_offset`` as a field, so rejects tally by reason)."""
    at = f" at byte offset {offset}" if offset is not None else ""
    return f"not valid UTF-8 (byte 0x{byte:02x}{at}); re-encode the file as UTF-8"


def _decode(path: Path, data: bytes, strict_encoding: bool = True) -> str:
    """The file as text. Strict: bytes that are not UTF-8 are fatal (naming line and byte offset).
    Lenient: each such byte becomes a lone surrogate (``surrogateescape``), so the readers can
    reject just the record that holds it (:func:`_bad_byte`)."""
    if not strict_encoding:
        return data.decode("utf-8-sig", "surrogateescape")
    try:
        text = data.decode("utf-8-sig")  # tolerate a byte-order mark
    except UnicodeDecodeError as e:
        offset = e.start + _bom(data)
        line = data.count(b"\n", 0, offset) + 1
        raise InputError(path, _not_utf8(data[offset], offset), line=line) from None
    if not text.strip():
        raise InputError(path, "empty file: no records to read")
    return text


def _bad_byte(text: str, start: int = 0, end: int | None = None) -> tuple[int, int] | None:
    """(byte value, byte offset in ``text`` encoded back) of the first byte that was not UTF-8
    in ``text[start:end]`` as decoded by :func:`_decode` (lenient), or None."""
    m = _ESCAPED_BYTE.search(text, start, len(text) if end is None else end)
    if m is None:
        return None
    return ord(m.group()) - 0xDC00, len(text[: m.start()].encode("utf-8", "surrogateescape"))


def _decoded_lines(
    path: Path, data: bytes, strict_encoding: bool = False
) -> Iterator[tuple[int, str, str | None, int | None]]:
    """``(line number, text, encoding error, its byte offset)`` per non-blank line of ``data``.

    Split on ``\\n`` only (JSON strings may hold U+2028, \\x85 or \\x0c, which ``splitlines()``
    would treat as line ends) and decoded line by line, so a byte that is not UTF-8 costs its own
    line only: that line comes back with an error (its text decoded with replacement characters,
    for the rejects file) unless ``strict_encoding``, where it is fatal as a whole-file error.
    """
    offset = 0
    for lineno, raw in enumerate(io.BytesIO(data), start=1):
        start, offset = offset, offset + len(raw)
        body = raw.removesuffix(b"\n").removesuffix(b"\r")
        if lineno == 1 and body.startswith(_BOM):
            body, start = body[len(_BOM) :], start + len(_BOM)
        try:
            line = body.decode("utf-8")
        except UnicodeDecodeError as e:
            if strict_encoding:
                raise InputError(path, _not_utf8(body[e.start], start + e.start), line=lineno) from None
            line = body.decode("utf-8", "replace")
            if line.strip():
                yield lineno, line, _not_utf8(body[e.start]), start + e.start
            continue
        if line.strip():  # blank lines are layout, not records
            yield lineno, line, None, None


def _iter_jsonl(path: Path, data: bytes, strict_encoding: bool = False) -> Iterator[_Record]:
    for n, (lineno, line, bad, offset) in enumerate(_decoded_lines(path, data, strict_encoding), start=1):
        if bad is not None:
            yield _Record(None, lineno, n, raw=line, parse_error=bad, byte_offset=offset)
            continue
        try:
            yield _Record(json.loads(line), lineno, n, raw=line)
        except json.JSONDecodeError as e:
            yield _Record(
                None, lineno, n, raw=line, parse_error=f"malformed JSON line: {e.msg} (column {e.colno})"
            )


def _iter_json_array(path: Path, text: str, bom: int = 0) -> Iterator[_Record]:
    """Elements of a top-level JSON array, each with the line it starts on.

    Decoded element by element (``raw_decode``) so a reject can name its line. A malformed
    array cannot be re-synchronised, so it is fatal. ``text`` from :func:`_decode` (lenient):
    a record holding a byte that is not UTF-8 becomes a reject (``bom``: bytes before ``text``).
    """
    decoder = json.JSONDecoder()
    ws = " \t\r\n"
    dirty = _ESCAPED_BYTE.search(text) is not None  # any byte that was not UTF-8: check each record
    pos = len(text) - len(text.lstrip(ws))
    if text.startswith("{", pos):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(path, f"malformed JSON: {e.msg} (column {e.colno})", line=e.lineno) from None
        # {"data": [...]} / {"train": [...]}: one list of records under a single key.
        lists = [k for k, v in obj.items() if isinstance(v, list)] if isinstance(obj, dict) else []
        if len(lists) == 1 and not any(k in obj for _, sig in _SIGNATURES for k in sig):
            for i, value in enumerate(obj[lists[0]], start=1):
                rec = _Record(value, None, i)
                yield _checked(rec, json.dumps(value, ensure_ascii=False)) if dirty else rec
            return
        yield _checked(_Record(obj, 1 + text.count("\n", 0, pos), 1), text, bom=bom)
        return
    if not text.startswith("[", pos):
        raise InputError(
            path, "malformed JSON: expected an array '[...]' of records", line=1 + text.count("\n", 0, pos)
        )
    pos += 1
    n = 0
    while True:
        while pos < len(text) and text[pos] in ws:
            pos += 1
        if text.startswith("]", pos):
            return
        if n and not text.startswith(",", pos):
            raise InputError(
                path, "malformed JSON: expected ',' or ']' between records", line=1 + text.count("\n", 0, pos)
            )
        if n:
            pos += 1
            while pos < len(text) and text[pos] in ws:
                pos += 1
        line = 1 + text.count("\n", 0, pos)
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise InputError(path, f"malformed JSON: {e.msg} (column {e.colno})", line=e.lineno) from None
        n += 1
        rec = _Record(value, line, n, raw=text[pos:end])
        yield _checked(rec, text, pos, end, bom) if dirty else rec
        pos = end


def _checked(rec: _Record, text: str, start: int = 0, end: int | None = None, bom: int | None = None) -> _Record:
    """``rec``, or an encoding reject in its place when its source ``text[start:end]`` holds a
    byte that was not UTF-8. ``bom``: bytes of the file before ``text`` when ``text`` is the whole
    file (so the reject knows the byte offset); None when ``text`` is not the file's text."""
    bad = _bad_byte(text, start, end)
    if bad is None:
        return rec
    byte, offset = bad
    raw = _ESCAPED_BYTE.sub("\ufffd", text[start:end])
    return _Record(None, rec.line, rec.record, raw=raw, parse_error=_not_utf8(byte),
                   byte_offset=None if bom is None else offset + bom)


def _looks_like_hf_dataset(path: Path) -> bool:
    return path.is_dir() and any(
        (path / name).exists() for name in ("dataset_info.json", "state.json", "dataset_dict.json")
    )


def _iter_hf(path: Path, split: str | None, strict_encoding: bool = False) -> Iterator[_Record]:
    from datasets import DatasetDict, load_from_disk

    ds = load_from_disk(str(path))
    if isinstance(ds, DatasetDict):
        names = list(ds)
        chosen = split or ("train" if "train" in names else names[0] if len(names) == 1 else None)
        if chosen not in ds:
            raise InputError(path, f"dataset has splits {names}; choose one with split=...")
        ds = ds[chosen]
    done = 0
    try:
        for i, row in enumerate(ds, start=1):
            yield _Record(row, None, i)
            done = i
    except UnicodeDecodeError as e:  # Arrow does not check string columns when it reads them
        if strict_encoding:
            raise InputError(path, f"row {done + 1}: {_not_utf8(e.object[e.start])}") from None
        for i, (row, bad) in enumerate(_arrow_rows(ds.flatten_indices().data.table), start=1):
            if i > done:
                yield _arrow_record(row, bad, i)


def _arrow_rows(table: Any) -> Iterator[tuple[dict[str, Any], tuple[str, int] | None]]:
    """Rows of a pyarrow Table whose string columns may hold bytes that are not UTF-8 (Arrow
    reads them unchecked): ``(row, None)``, or ``(row, (column, bad byte))`` with that column's
    text decoded with replacement characters (for the rejects file)."""
    import pyarrow as pa

    columns: dict[str, tuple[bool, list[Any]]] = {}
    for name in table.column_names:
        col = table.column(name)
        as_bytes = {pa.string(): pa.binary(), pa.large_string(): pa.large_binary()}.get(col.type)
        if as_bytes is None:
            columns[name] = (False, col.to_pylist())
        else:
            columns[name] = (True, [v for chunk in col.chunks for v in chunk.view(as_bytes).to_pylist()])
    for i in range(table.num_rows):
        row, bad = {}, None
        for name, (is_text, values) in columns.items():
            value = values[i]
            if is_text and value is not None:
                try:
                    value = value.decode("utf-8")
                except UnicodeDecodeError as e:
                    bad = bad or (name, value[e.start])
                    value = value.decode("utf-8", "replace")
            row[name] = value
        yield row, bad


def _arrow_record(values: dict[str, Any], bad: tuple[str, int] | None, record: int, **where: Any) -> _Record:
    """A row from :func:`_arrow_rows` as a record, or as an encoding reject naming its column."""
    if bad is None:
        return _Record(values, None, record, **where)
    raw = json.dumps(_json_safe(values), ensure_ascii=False, default=str)
    return _Record(None, None, record, raw=raw, parse_error=_not_utf8(bad[1]), error_field=bad[0], **where)


def _iter_parquet(path: Path, strict_encoding: bool = False) -> Iterator[_Record]:
    """Rows of a Parquet file or folder; each names its own file and row there. A string cell
    that is not UTF-8 is fatal for the file with ``strict_encoding``, else a reject of its row."""
    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    if not files:
        raise InputError(path, "no *.parquet files in this folder")
    n = 0
    for f in files:
        try:
            rows = ((row, None) for row in pl.read_parquet(f).iter_rows(named=True))
        except Exception as e:  # polars raises several types for corrupt files
            if strict_encoding or "utf-8" not in str(e).casefold():
                raise InputError(f, f"not a readable Parquet file: {e}") from None
            import pyarrow.parquet as pq

            rows = _arrow_rows(pq.read_table(f))
        for i, (row, bad) in enumerate(rows, start=1):
            n += 1
            yield _arrow_record(row, bad, n, file=f if f != path else None, row=i)


def iter_records(path: Path | str, split: str | None = None, strict_encoding: bool = False) -> Iterator[_Record]:
    """Records of any supported container, in file order (raises InputError for fatal problems).

    A record holding bytes that are not UTF-8 comes back with a ``parse_error`` (a reject of its
    own: every other record is read) unless ``strict_encoding``, where it is fatal for the file."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found")
    if _looks_like_hf_dataset(path):
        yield from _iter_hf(path, split, strict_encoding)
    elif path.suffix == ".parquet" or (path.is_dir() and any(path.glob("*.parquet"))):
        yield from _iter_parquet(path, strict_encoding)
    elif path.is_dir():
        raise InputError(path, "a folder that is neither a saved HF dataset nor a folder of Parquet files")
    else:
        data = _read_bytes(path)
        first = data.lstrip(b" \t\r\n").removeprefix(_BOM).lstrip(b" \t\r\n")[:1]
        if path.suffix in (".jsonl", ".ndjson"):
            yield from _iter_jsonl(path, data, strict_encoding)
        elif path.suffix == ".json" and first == b"[":
            yield from _iter_json_array(path, _decode(path, data, strict_encoding), _bom(data))
        elif path.suffix == ".json":
            # One object per line is common under a .json name; a single object (maybe {"data": [...]}) is not.
            records = list(_iter_jsonl(path, data, strict_encoding))
            if len(records) > 1 and sum(r.parse_error is None for r in records) > len(records) // 2:
                yield from records
            else:
                yield from _iter_json_array(path, _decode(path, data, strict_encoding), _bom(data))
        elif path.suffix == ".txt":
            raise InputError(path, "plain text holds passages, not examples: use read_passages()")
        else:
            raise InputError(
                path, f"unknown file type {path.suffix!r}: use .jsonl, .json, .parquet or a saved HF dataset"
            )


def _bom(data: bytes) -> int:
    return len(_BOM) if data.startswith(_BOM) else 0


# ---------------------------------------------------------------------------------------------
# Row formats: record -> example


def detect_format(record: Mapping[str, Any]) -> str | None:
    """The format a record's fields match, or None."""
    for fmt, needed in _SIGNATURES:
        if all(k in record for k in needed):
            return fmt
    return None


def _string(record: Mapping[str, Any], key: str, required: bool = True) -> str:
    if key not in record or record[key] is None:
        if required:
            raise RowError(key, "missing required field")
        return ""
    value = record[key]
    if not isinstance(value, str):
        raise RowError(key, f"must be a string, got {type(value).__name__}")
    if required and not value.strip():
        raise RowError(key, "empty")
    return value


def _extra(record: Mapping[str, Any], used: tuple[str, ...]) -> dict[str, Any]:
    """Unused fields, JSON-safe, for meta (nulls carry nothing: Parquet fills absent keys with them)."""
    return {k: _json_safe(v) for k, v in record.items() if k not in used and v is not None}


def _json_safe(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except TypeError:
        return str(value)


def _messages(value: Any, key: str) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise RowError(
            key, f"must be a non-empty list of {{role, content}} messages, got {type(value).__name__}"
        )
    for i, m in enumerate(value):
        if (
            not isinstance(m, Mapping)
            or not isinstance(m.get("role"), str)
            or not isinstance(m.get("content"), str)
        ):
            raise RowError(key, f"message {i} must have string 'role' and 'content'")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def _from_messages(messages: list[dict[str, str]], key: str) -> tuple[str, str, dict[str, Any]]:
    """(instruction, response, meta) from a conversation ending with the assistant's answer."""
    if messages[-1]["role"] != "assistant":
        raise RowError(key, f"last message must be the assistant's answer, got role {messages[-1]['role']!r}")
    users = [i for i, m in enumerate(messages[:-1]) if m["role"] == "user"]
    if not users:
        raise RowError(key, "no user message before the assistant's answer")
    last_user = users[-1]
    meta: dict[str, Any] = {}
    system = [m["content"] for m in messages if m["role"] == "system"]
    if system:
        meta["system"] = system[0]
    history = [m for m in messages[:last_user] if m["role"] != "system"]
    if history:
        meta["history"] = history  # earlier turns: kept, not scored
    response = messages[-1]["content"]
    for name, text in (("instruction", messages[last_user]["content"]), ("response", response)):
        if not text.strip():
            raise RowError(key, f"{name} turn is empty")
    return messages[last_user]["content"], response, meta


def to_example(record: Any, fmt: str, source: str) -> dict[str, str]:
    """One record -> one example row; raises RowError naming the field at fault."""
    if not isinstance(record, Mapping):
        raise RowError(None, f"record must be a JSON object, got {type(record).__name__}")
    if fmt == "example":
        meta = record.get("meta")
        if isinstance(meta, str):
            try:
                meta = json.loads(meta) if meta else {}
            except json.JSONDecodeError as e:
                raise RowError("meta", f"not a JSON object string: {e.msg}") from None
        if meta is not None and not isinstance(meta, Mapping):
            raise RowError("meta", f"must be an object, got {type(meta).__name__}")
        used = ("id", "instruction", "context", "response", "source", "meta", "messages")
        meta = {**_extra(record, used), **(meta or {})}
        return make_example(
            _string(record, "instruction"),
            _string(record, "response"),
            _string(record, "context", False),
            source=_string(record, "source", False) or source,
            meta=meta,
        )
    if fmt == "alpaca":
        used = ("instruction", "input", "output")
        return make_example(
            _string(record, "instruction"),
            _string(record, "output"),
            _string(record, "input", False),
            source=source,
            meta=_extra(record, used),
        )
    if fmt == "qa":
        used = ("question", "answer", "context")
        return make_example(
            _string(record, "question"),
            _string(record, "answer"),
            _string(record, "context", False),
            source=source,
            meta=_extra(record, used),
        )
    if fmt == "messages":
        instruction, response, meta = _from_messages(
            _messages(record.get("messages"), "messages"), "messages"
        )
        return make_example(
            instruction, response, source=source, meta={**_extra(record, ("messages",)), **meta}
        )
    if fmt == "prompt_completion":
        prompt, completion = record.get("prompt"), record.get("completion")
        extra = _extra(record, ("prompt", "completion"))
        if isinstance(prompt, list) or isinstance(completion, list):  # TRL's conversational form
            msgs = _messages(prompt, "prompt") + _messages(completion, "completion")
            instruction, response, meta = _from_messages(msgs, "completion")
            return make_example(instruction, response, source=source, meta={**extra, **meta})
        return make_example(
            _string(record, "prompt"), _string(record, "completion"), source=source, meta=extra
        )
    raise ValueError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)} or auto")


def _decide_format(path: Path, records: list[_Record], fmt: str) -> str:
    if fmt != "auto":
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)} or auto")
        return fmt
    parsed = [r for r in records[:_DETECT_RECORDS] if isinstance(r.value, Mapping)]
    if not parsed:
        bad = next((r for r in records if r.parse_error), None)
        if bad is not None:
            raise InputError(
                path,
                f"no record parses, so the format cannot be decided; first error: {bad.parse_error}",
                line=bad.line,
            )
        first = records[0]
        raise InputError(
            path, f"records must be JSON objects, got {type(first.value).__name__}", line=first.line
        )
    votes = Counter(detect_format(r.value) for r in parsed)
    votes.pop(None, None)
    if not votes:
        fields = sorted(parsed[0].value)
        if "text" in parsed[0].value:
            raise InputError(
                path,
                f"records have a 'text' field but no instruction/response: passages, use read_passages() (fields: {fields})",
                line=parsed[0].line,
            )
        known = "; ".join(f"{f}: {', '.join(sig)}" for f, sig in _SIGNATURES)
        raise InputError(
            path,
            f"cannot tell the format from the fields {fields}; expected one of ({known}) or pass fmt=",
            line=parsed[0].line,
        )
    return votes.most_common(1)[0][0]


def _reject(path: Path, rec: _Record, field_name: str | None, reason: str) -> dict[str, Any]:
    raw = (
        rec.raw if rec.raw is not None else json.dumps(_json_safe(rec.value), ensure_ascii=False, default=str)
    )
    return {
        "file": str(rec.file or path),
        "line": rec.line,
        "record": rec.record,
        "row": rec.row if rec.row is not None else rec.record,
        "byte_offset": rec.byte_offset,
        "field": field_name,
        "reason": reason,
        "raw": raw[:_RAW_CHARS],
    }


def read_examples(
    path: Path | str,
    fmt: str = "auto",
    split: str | None = None,
    source: str | None = None,
    strict_encoding: bool = False,
) -> ReadResult:
    """Read ``path`` into the example table; bad rows go to ``rejects`` (see the module docstring).

    ``fmt``: one of FORMATS or "auto"; ``split``: which split of a saved DatasetDict;
    ``source``: the value of the ``source`` column (default: the path as given);
    ``strict_encoding``: bytes that are not UTF-8 fail the whole file instead of their record.
    """
    path = Path(path)
    records = list(iter_records(path, split, strict_encoding))
    if not records:
        raise InputError(path, "empty: no records to read")
    fmt = _decide_format(path, records, fmt)
    return convert_records(path, records, fmt, source if source is not None else str(path))


def convert_records(path: Path, records: Sequence[_Record], fmt: str, source: str) -> ReadResult:
    """Records of one file in a known format -> examples, with a reject for each bad record
    (read_examples for a whole file, pipelines.stream_io for each chunk of one)."""
    rows, rejects = [], []
    for rec in records:
        if rec.parse_error:
            rejects.append(_reject(path, rec, rec.error_field, rec.parse_error))
            continue
        try:
            rows.append(to_example(rec.value, fmt, source))
        except RowError as e:
            rejects.append(_reject(path, rec, e.field, e.reason))
    counts = {
        "records": len(records),
        "examples": len(rows),
        "rejects": len(rejects),
        "rejects_by_reason": dict(
            Counter(f"{r['field']}: {r['reason']}" if r["field"] else r["reason"] for r in rejects)
        ),
    }
    return ReadResult(to_table(rows), rejects, counts, fmt)


# ---------------------------------------------------------------------------------------------
# Passages for the generators


def read_passages(
    path: Path | str, text_field: str = "text", min_chars: int = 1, strict_encoding: bool = False
) -> ReadResult:
    """Passages as a table (``text_id``, ``text``, ``source``, ``meta``) with rejects and counts.

    ``.txt``: one passage a line (blank lines skipped). JSONL/JSON/Parquet/HF: ``text_field`` of
    each record (other fields go to ``meta``). ``text_id`` is ``<file name>:<record>``, stable.
    Passages shorter than ``min_chars`` after stripping are rejected, not dropped; so is a line
    or record with bytes that are not UTF-8 (fatal for the file with ``strict_encoding``).
    """
    path = Path(path)
    if path.suffix == ".txt":
        lines = _decoded_lines(path, _read_bytes(path), strict_encoding)
        records = [
            _Record(None if bad else line, i, n, raw=line, parse_error=bad, byte_offset=offset)
            for n, (i, line, bad, offset) in enumerate(lines, 1)
        ]
    else:
        records = list(iter_records(path, strict_encoding=strict_encoding))
    if not records:
        raise InputError(path, "empty: no passages to read")
    if all(r.parse_error for r in records):
        raise InputError(
            path, f"no record parses; first error: {records[0].parse_error}", line=records[0].line
        )
    rows, rejects = [], []
    for rec in records:
        try:
            if rec.parse_error:
                raise RowError(rec.error_field, rec.parse_error)
            if isinstance(rec.value, str):
                passage, meta = rec.value, {}
            elif isinstance(rec.value, Mapping):
                passage, meta = _string(rec.value, text_field), _extra(rec.value, (text_field,))
            else:
                raise RowError(None, f"record must be a JSON object, got {type(rec.value).__name__}")
            if len(passage.strip()) < min_chars:
                raise RowError(text_field, f"shorter than {min_chars} characters")
        except RowError as e:
            rejects.append(_reject(path, rec, e.field, e.reason))
            continue
        rows.append(
            {
                "text_id": f"{path.name}:{rec.record}",
                "text": passage.strip(),
                "source": str(path),
                "meta": json.dumps(meta, sort_keys=True, ensure_ascii=False),
            }
        )
    schema = {"text_id": pl.Utf8, "text": pl.Utf8, "source": pl.Utf8, "meta": pl.Utf8}
    table = pl.DataFrame(rows, schema=schema) if rows else pl.DataFrame(schema=schema)
    counts = {"records": len(records), "passages": len(rows), "rejects": len(rejects)}
    return ReadResult(table, rejects, counts, "text")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Read a dataset file into the example schema and report counts.")
    ap.add_argument("path", help="JSONL, JSON, Parquet, or a saved HF dataset folder")
    ap.add_argument(
        "--format", default="auto", choices=("auto", *FORMATS), help="row format (default: detect)"
    )
    ap.add_argument("--split", default=None, help="split of a saved DatasetDict")
    ap.add_argument(
        "--out",
        default=None,
        help="write the examples here (.parquet, .jsonl, .json, or a folder: a saved HF dataset)",
    )
    ap.add_argument("--rejects", default=None, help="write the rejects here (JSONL)")
    ap.add_argument(
        "--strict-encoding",
        action="store_true",
        help="stop at the first byte that is not UTF-8 (default: reject that line, read the rest)",
    )
    args = ap.parse_args(argv)
    try:
        res = read_examples(args.path, args.format, split=args.split, strict_encoding=args.strict_encoding)
    except InputError as e:
        raise SystemExit(f"error: {e}") from None
    from pipelines.export import write_examples, write_rejects  # export imports this module

    if args.out:
        write_examples(res.table, args.out)
    if args.rejects:
        write_rejects(res.rejects, args.rejects)
    print(json.dumps({"format": res.fmt, **res.counts}, indent=1))


if __name__ == "__main__":
    main()
