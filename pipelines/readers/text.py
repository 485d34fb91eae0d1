"""Bytes to text for the line-based and document readers.

    for line in iter_lines(path, max_line_bytes=64 << 20): line.lineno, line.text, line.error

Encoding: a byte-order mark picks UTF-8, UTF-16 (LE/BE) or UTF-32 (LE/BE); without one the file
is UTF-8. A byte (UTF-8) or code unit (UTF-16/32) that does not decode costs its own line only:
the line comes back with an ``error`` (its text decoded with replacement characters, for the
rejects file) unless ``strict_encoding``, where it is fatal for the file. Lines split on ``\\n``
only (JSON strings may hold U+2028, \\x85 or \\x0c, which ``splitlines()`` would treat as line
ends); blank lines are layout, not records. A line longer than ``max_line_bytes`` comes back as
an error too, read past in pieces so memory never holds more than the cap.
"""

from __future__ import annotations

import codecs
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pipelines.readers.records import MAX_LINE_BYTES, RAW_CHARS, InputError, not_utf8

UTF8_BOM = b"\xef\xbb\xbf"
# Longest first: the UTF-32-LE mark starts with the UTF-16-LE one.
BOMS = (
    (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (UTF8_BOM, "utf-8"),
    (b"\xff\xfe", "utf-16-le"),
    (b"\xfe\xff", "utf-16-be"),
)
# A byte that did not decode, as a lone surrogate U+DC00 + byte: surrogateescape for UTF-8 (bytes
# >= 0x80), the handler below for UTF-16/32. Strictly decoded text never holds a lone surrogate.
ESCAPED_BYTE = re.compile("[\udc00-\udcff]")
_MARK = "instruct-forge-mark"
codecs.register_error(_MARK, lambda e: (chr(0xDC00 + e.object[e.start]), e.end))


HEAD_BYTES = 68  # what detect_bom looks at


def detect_bom(head: bytes) -> tuple[str, int]:
    """(encoding, length of its byte-order mark) from a file's first bytes; UTF-8 without one.

    ``FF FE 00 00`` is also the UTF-16-LE mark followed by U+0000: it is UTF-32-LE only when
    what follows decodes as UTF-32 (UTF-16 text read as UTF-32 gives code points past U+10FFFF)."""
    for bom, encoding in BOMS:
        if head.startswith(bom):
            if encoding == "utf-32-le":
                body = head[4:HEAD_BYTES][: (len(head) - 4) // 4 * 4]
                try:
                    body.decode("utf-32-le")
                except UnicodeDecodeError:
                    return "utf-16-le", 2
            return encoding, len(bom)
    return "utf-8", 0


def encoding_name(encoding: str) -> str:
    return encoding.split("-")[0].upper() + "-" + encoding.split("-")[1]  # "utf-16-le" -> "UTF-16"


@dataclass
class Line:
    lineno: int
    text: str
    error: str | None = None  # why the line is not usable text (bad bytes, too long)
    byte_offset: int | None = None  # where a byte that is not UTF-8 sits in the file


def too_long(limit: int) -> str:
    return f"line longer than max_line_bytes ({limit} bytes)"


def iter_lines(
    path: Path, strict_encoding: bool = False, max_line_bytes: int = MAX_LINE_BYTES, buffer: int = 1 << 20
) -> Iterator[Line]:
    """Non-blank lines of ``path`` (see the module docstring); fatal errors for a missing or blank file."""
    if max_line_bytes <= 0:
        raise ValueError(f"max_line_bytes must be positive, got {max_line_bytes}")
    if not path.exists():
        raise InputError(path, "file not found")
    anything = False
    with open(path, "rb", buffering=buffer) as f:
        encoding, bom = detect_bom(f.read(HEAD_BYTES))
        f.seek(bom)
        lines = _utf8_lines(path, f, bom, strict_encoding, max_line_bytes) if encoding == "utf-8" else \
            _wide_lines(path, f, encoding, strict_encoding, max_line_bytes)
        for line in lines:
            anything = True
            yield line
    if not anything:
        raise InputError(path, "empty file: no records to read")


def _skip_rest(f: io.BufferedReader) -> None:
    while chunk := f.readline(1 << 16):
        if chunk.endswith(b"\n"):
            return


def _utf8_lines(path: Path, f: io.BufferedReader, offset: int, strict: bool, limit: int) -> Iterator[Line]:
    lineno = 0
    while raw := f.readline(limit + 1):
        lineno += 1
        start, offset = offset, offset + len(raw)
        if len(raw) > limit and not raw.endswith(b"\n"):
            head, raw = raw[:RAW_CHARS], b""  # let the cap's worth of bytes go before reading on
            _skip_rest(f)
            offset = f.tell()
            yield Line(lineno, head.decode("utf-8", "replace"), too_long(limit))
            continue
        body = raw.removesuffix(b"\n").removesuffix(b"\r")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as e:
            if strict:
                raise InputError(path, not_utf8(body[e.start], start + e.start), line=lineno) from None
            text = body.decode("utf-8", "replace")
            if text.strip():
                yield Line(lineno, text, not_utf8(body[e.start]), start + e.start)
            continue
        if text.strip():
            yield Line(lineno, text)


def _wide_lines(path: Path, f: io.BufferedReader, encoding: str, strict: bool, limit: int) -> Iterator[Line]:
    """UTF-16/32 lines; ``limit`` bytes read as ``limit // width`` characters."""
    width = 4 if "32" in encoding else 2
    chars = max(1, limit // width)
    reader = io.TextIOWrapper(f, encoding=encoding, errors=_MARK, newline="\n")
    name = encoding_name(encoding)
    lineno = 0
    try:
        while raw := reader.readline(chars + 1):
            lineno += 1
            if len(raw) > chars and not raw.endswith("\n"):
                raw = raw[:RAW_CHARS]
                while (rest := reader.readline(1 << 14)) and not rest.endswith("\n"):
                    pass
                yield Line(lineno, ESCAPED_BYTE.sub("\ufffd", raw), too_long(limit))
                continue
            text = raw.removesuffix("\n").removesuffix("\r")
            bad = ESCAPED_BYTE.search(text)
            if bad is not None:
                byte = ord(bad.group()) - 0xDC00
                if strict:
                    raise InputError(path, not_utf8(byte, encoding=name), line=lineno)
                if text.strip():
                    yield Line(lineno, ESCAPED_BYTE.sub("\ufffd", text), not_utf8(byte, encoding=name))
                continue
            if text.strip():
                yield Line(lineno, text)
    finally:
        reader.detach()


@dataclass
class Text:
    """A whole file decoded (a JSON document): bad bytes kept as lone surrogates (:func:`bad_byte`)."""

    text: str
    encoding: str
    bom: int


def decode_file(path: Path, strict_encoding: bool = False) -> Text:
    """The file as text (a JSON document). Strict: a byte that does not decode is fatal, naming
    line and byte offset; lenient: it becomes a lone surrogate so just its record is rejected."""
    if not path.exists():
        raise InputError(path, "file not found")
    data = path.read_bytes()
    encoding, bom = detect_bom(data[:HEAD_BYTES])
    body = data[bom:]
    if encoding != "utf-8":
        text = body.decode(encoding, _MARK)
        bad = ESCAPED_BYTE.search(text)
        if strict_encoding and bad is not None:
            line = 1 + text.count("\n", 0, bad.start())
            raise InputError(path, not_utf8(ord(bad.group()) - 0xDC00, encoding=encoding_name(encoding)), line=line)
    elif strict_encoding:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as e:
            offset = e.start + bom
            raise InputError(path, not_utf8(data[offset], offset), line=data.count(b"\n", 0, offset) + 1) from None
    else:
        text = body.decode("utf-8", "surrogateescape")
    if not text.strip():
        raise InputError(path, "empty file: no records to read")
    return Text(text, encoding, bom)


def bad_byte(doc: Text, start: int = 0, end: int | None = None) -> tuple[str, int | None] | None:
    """(reason, byte offset in the file or None) of the first byte that did not decode in
    ``doc.text[start:end]``, or None when there is none."""
    m = ESCAPED_BYTE.search(doc.text, start, len(doc.text) if end is None else end)
    if m is None:
        return None
    byte = ord(m.group()) - 0xDC00
    if doc.encoding != "utf-8":
        return not_utf8(byte, encoding=encoding_name(doc.encoding)), None
    return not_utf8(byte), doc.bom + len(doc.text[: m.start()].encode("utf-8", "surrogateescape"))
