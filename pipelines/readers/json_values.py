"""Strict JSON values: what a record may hold.

    value, end, problem = decode_value(text)          # raises json.JSONDecodeError when malformed

Two things Python's ``json`` accepts are a reject of their record here, never a crash or a
value passed on: the literals ``NaN``, ``Infinity`` and ``-Infinity`` (not JSON: every strict
reader downstream refuses them, so they must not reach ``meta``), and nesting deeper than the
parser's recursion allows (``RecursionError``, about 1000 levels), which would otherwise lose the
whole file. ``problem`` names the reason; ``end`` is where the value ends either way, so a reader
of a JSON array can step past a rejected element.
"""

from __future__ import annotations

import json
import re
from typing import Any

TOO_DEEP = "nesting too deep: arrays/objects nested deeper than the JSON parser allows (~1000 levels)"
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.S)
_LITERAL = re.compile(r"-?Infinity|NaN")
_WS = re.compile(r"[ \t\n\r]*")
_WS_CHARS = " \t\n\r"


def non_finite(literal: str) -> str:
    return f"{literal} is not valid JSON (strict JSON has no NaN or Infinity): write null or a string"


class _NonFinite(Exception):
    """A NaN/Infinity literal met by :data:`_FAST` (the careful path then names it)."""


def _refuse_constant(name: str) -> None:
    raise _NonFinite(name)


_FAST = json.JSONDecoder(parse_constant=_refuse_constant)  # one decoder for every clean value


def decode_value(text: str, pos: int | None = None) -> tuple[Any, int, str | None]:
    """The JSON value at ``text[pos:]`` (``pos`` None: the whole text, surrounding whitespace
    allowed, nothing else after it): ``(value, end, problem)``. ``problem`` is None, or the
    reason the value is a reject (then ``value`` is None)."""
    start = pos if pos is not None else (0 if text[:1] not in _WS_CHARS else _WS.match(text, 0).end())
    try:  # the common case: a clean value, parsed by a decoder made once
        value, end = _FAST.raw_decode(text, start)
    except (_NonFinite, RecursionError):
        return _decode_carefully(text, start, pos is None)
    if pos is None and end != len(text):
        _nothing_after(text, end)
    return value, end, None


def _nothing_after(text: str, end: int) -> None:
    """Raise as ``json.loads`` does when more than whitespace follows the value ending at ``end``."""
    trailing = _WS.match(text, end).end()
    if trailing != len(text):
        raise json.JSONDecodeError("Extra data", text, trailing)


def _decode_carefully(text: str, start: int, whole: bool) -> tuple[Any, int, str | None]:
    """decode_value for a value with a NaN/Infinity literal or nested too deep: parsed to its
    end (so a caller can step past it), the first such literal named."""
    seen: list[str] = []

    def constant(name: str) -> None:
        seen.append(name)
        return None

    decoder = json.JSONDecoder(parse_constant=constant)
    try:
        value, end = decoder.raw_decode(text, start)
    except RecursionError:
        return None, value_end(text, start), TOO_DEEP
    if whole:
        _nothing_after(text, end)
    if seen:
        return None, end, non_finite(seen[0])
    return value, end, None


def value_end(text: str, pos: int) -> int:
    """Where the array/object (or bare NaN/Infinity) starting at ``pos`` ends; ``len(text)`` when
    it never closes (the caller's next parse then reports the error)."""
    m = _LITERAL.match(text, pos)
    if m:
        return m.end()
    depth = 0
    for m in _TOKEN.finditer(text, pos):
        t = m.group()
        if t == "[" or t == "{":
            depth += 1
        elif t == "]" or t == "}":
            depth -= 1
        if depth == 0:
            return m.end()
    return len(text)

