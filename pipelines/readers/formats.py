"""Row formats: one record (a dict from any container) -> one example row.

| fmt               | fields                                   | -> instruction / context / response |
|-------------------|------------------------------------------|-------------------------------------|
| example           | instruction, response [, context, source, meta] | as named (this project's own rows) |
| alpaca            | instruction, output [, input]            | instruction / input / output        |
| messages          | messages: [{role, content}, ...]          | last user turn / "" / final assistant turn |
| prompt_completion | prompt, completion (strings or messages)  | prompt / "" / completion            |
| qa                | question, answer [, context]             | question / context / answer         |

Fields a format does not use go into ``meta``, which is strict JSON: a float that is not finite
(a Parquet or HF cell; JSON text with NaN/Infinity is already a reject) is stored there as null.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipelines.readers.json_values import decode_value
from pipelines.readers.records import InputError, Record, RowError
from pipelines.schema import make_example

FORMATS = ("example", "alpaca", "messages", "prompt_completion", "qa")
# Fields whose presence decides the format, in priority order (first match wins).
# This project's own rows come first: an exported row also carries a derived `messages` column,
# and reading it as chat would fold its context into the instruction (and change its id).
SIGNATURES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("example", ("instruction", "response")),
    ("messages", ("messages",)),
    ("prompt_completion", ("prompt", "completion")),
    ("alpaca", ("instruction", "output")),
    ("qa", ("question", "answer")),
)
DETECT_RECORDS = 100  # records looked at by format auto-detection


def detect_format(record: Mapping[str, Any]) -> str | None:
    """The format a record's fields match, or None."""
    for fmt, needed in SIGNATURES:
        if all(k in record for k in needed):
            return fmt
    return None


def string_field(record: Mapping[str, Any], key: str, required: bool = True) -> str:
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


def extra_fields(record: Mapping[str, Any], used: tuple[str, ...]) -> dict[str, Any]:
    """Unused fields, JSON-safe, for meta (nulls carry nothing: Parquet fills absent keys with them)."""
    return {k: _json_safe(v) for k, v in record.items() if k not in used and v is not None}


def _json_safe(value: Any) -> Any:
    """``value`` as strict JSON: a float that is not finite becomes None, what JSON cannot hold its str."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    try:
        json.dumps(value, allow_nan=False)
        return value
    except TypeError:
        return str(value)
    except ValueError:  # a NaN inside a list or struct cell
        if isinstance(value, Mapping):
            return {k: _json_safe(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [_json_safe(v) for v in value]
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
                meta, _, problem = decode_value(meta) if meta else ({}, 0, None)
            except json.JSONDecodeError as e:
                raise RowError("meta", f"not a JSON object string: {e.msg}") from None
            if problem:
                raise RowError("meta", problem)
        if meta is not None and not isinstance(meta, Mapping):
            raise RowError("meta", f"must be an object, got {type(meta).__name__}")
        used = ("id", "instruction", "context", "response", "source", "meta", "messages")
        meta = {**extra_fields(record, used), **_json_safe(dict(meta or {}))}
        return make_example(
            string_field(record, "instruction"),
            string_field(record, "response"),
            string_field(record, "context", False),
            source=string_field(record, "source", False) or source,
            meta=meta,
        )
    if fmt == "alpaca":
        used = ("instruction", "input", "output")
        return make_example(
            string_field(record, "instruction"),
            string_field(record, "output"),
            string_field(record, "input", False),
            source=source,
            meta=extra_fields(record, used),
        )
    if fmt == "qa":
        used = ("question", "answer", "context")
        return make_example(
            string_field(record, "question"),
            string_field(record, "answer"),
            string_field(record, "context", False),
            source=source,
            meta=extra_fields(record, used),
        )
    if fmt == "messages":
        instruction, response, meta = _from_messages(
            _messages(record.get("messages"), "messages"), "messages"
        )
        return make_example(
            instruction, response, source=source, meta={**extra_fields(record, ("messages",)), **meta}
        )
    if fmt == "prompt_completion":
        prompt, completion = record.get("prompt"), record.get("completion")
        extra = extra_fields(record, ("prompt", "completion"))
        if isinstance(prompt, list) or isinstance(completion, list):  # TRL's conversational form
            msgs = _messages(prompt, "prompt") + _messages(completion, "completion")
            instruction, response, meta = _from_messages(msgs, "completion")
            return make_example(instruction, response, source=source, meta={**extra, **meta})
        return make_example(
            string_field(record, "prompt"), string_field(record, "completion"), source=source, meta=extra
        )
    raise ValueError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)} or auto")


def decide_format(path: Path, records: list[Record], fmt: str) -> str:
    if fmt != "auto":
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)} or auto")
        return fmt
    parsed = [r for r in records[:DETECT_RECORDS] if isinstance(r.value, Mapping)]
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
        known = "; ".join(f"{f}: {', '.join(sig)}" for f, sig in SIGNATURES)
        raise InputError(
            path,
            f"cannot tell the format from the fields {fields}; expected one of ({known}) or pass fmt=",
            line=parsed[0].line,
        )
    return votes.most_common(1)[0][0]
