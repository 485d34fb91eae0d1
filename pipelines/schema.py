"""The example row: the only data contract between stages.

A table (polars) with these columns; stages add columns (``score_*``, ``keep_*``) and never
mutate another stage's column. ``messages`` is derived in TRL's chat format for export/training.

| column      | type            | meaning                                                      |
|-------------|-----------------|--------------------------------------------------------------|
| id          | str             | stable content hash of (instruction, context, response)      |
| instruction | str             | what the user asks                                           |
| context     | str             | user-provided passage ("" when none)                         |
| response    | str             | the assistant's answer                                       |
| source      | str             | generator + params, or the input file it was read from       |
| meta        | str (JSON dict) | discipline, subject, level, task_type, text_id, ...          |

``meta`` is stored as a JSON string so rows with different meta keys share one schema in
Parquet shards; use :func:`meta_of` / :func:`with_meta_field` to read and extend it.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any

import polars as pl

CORE_COLUMNS = ("id", "instruction", "context", "response", "source", "meta")
CORE_SCHEMA = {name: pl.Utf8 for name in CORE_COLUMNS}
# The long columns: what a step that needs only ids, scores and meta leaves unread.
TEXT_COLUMNS = ("instruction", "context", "response", "embedding")


def normalise_text(text: str) -> str:
    """Unicode-normalised, case-folded, whitespace-collapsed form used for hashing and dedup."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def example_id(instruction: str, context: str, response: str) -> str:
    """Stable id: the same content always gets the same id, whatever run produced it."""
    payload = "\x1f".join((instruction, context, response)).encode("utf-8")
    return hashlib.blake2b(payload, digest_size=12).hexdigest()


def make_example(
    instruction: str,
    response: str,
    context: str = "",
    source: str = "",
    meta: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """One row as a plain dict with every core column filled."""
    instruction, context, response = instruction.strip(), (context or "").strip(), response.strip()
    return {
        "id": example_id(instruction, context, response),
        "instruction": instruction,
        "context": context,
        "response": response,
        "source": source,
        "meta": json.dumps(dict(meta), sort_keys=True, ensure_ascii=False) if meta else "{}",
    }


def to_table(rows: Iterable[Mapping[str, Any]]) -> pl.DataFrame:
    """Rows (dicts with the core columns) -> a polars table with the core schema."""
    rows = list(rows)
    if not rows:
        return pl.DataFrame(schema=CORE_SCHEMA)
    return pl.DataFrame(rows, schema_overrides=CORE_SCHEMA, infer_schema_length=None)


def meta_of(row_meta: str | Mapping[str, Any] | None) -> dict[str, Any]:
    if row_meta is None or row_meta == "":
        return {}
    if isinstance(row_meta, Mapping):
        return dict(row_meta)
    return json.loads(row_meta)


def meta_field(table: pl.DataFrame, field: str) -> pl.Series:
    """One meta key as a column of strings (null where absent), e.g. for per-stratum quotas."""
    values = [meta_of(m).get(field) for m in table["meta"].to_list()]
    return pl.Series(field, [None if v is None else str(v) for v in values], dtype=pl.Utf8)


def with_meta_field(table: pl.DataFrame, field: str, values: Iterable[Any]) -> pl.DataFrame:
    """Return a copy whose meta JSON carries ``field`` set per row (None leaves the row unchanged)."""
    merged = []
    for meta, value in zip(table["meta"].to_list(), values, strict=True):
        m = meta_of(meta)
        if value is not None:
            m[field] = value
        merged.append(json.dumps(m, sort_keys=True, ensure_ascii=False))
    return table.with_columns(pl.Series("meta", merged, dtype=pl.Utf8))


def user_content(instruction: str, context: str) -> str:
    """The user turn: the instruction followed by its context passage, when there is one."""
    return f"{instruction}\n\n{context}" if context else instruction


def to_messages(instruction: str, context: str, response: str, system: str | None = None) -> list[dict]:
    """Chat form (TRL ``messages``) of one example."""
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": user_content(instruction, context)})
    messages.append({"role": "assistant", "content": response})
    return messages


def with_messages(table: pl.DataFrame) -> pl.DataFrame:
    """Add the derived ``messages`` column (list of {role, content} structs): :func:`to_messages`
    of every row, as polars expressions (a Python dict per row was a quarter of a 1M-row export)."""
    context = pl.col("context").fill_null("")
    user = (pl.when(context != "").then(pl.concat_str([pl.col("instruction"), pl.lit("\n\n"), context]))
            .otherwise(pl.col("instruction")))
    return table.with_columns(pl.concat_list([_turn("user", user), _turn("assistant", pl.col("response"))])
                              .alias("messages"))


def _turn(role: str, content: pl.Expr) -> pl.Expr:
    return pl.struct(pl.lit(role).alias("role"), content.alias("content"))
