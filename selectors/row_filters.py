"""A user's cheap row filters (no model): one function ``(row) -> bool | (bool, reason)`` each.

    def is_english(row):                      # mypkg/filters.py
        return row["response"].isascii(), "non-ASCII response"

    select.custom = ["mypkg.filters:is_english"]

Each filter sees a row as a dict (instruction, context, response, meta, the score columns). The
first filter that says False gives the row's ``filtered_by`` (``<filter>: <reason>``), which the
``filter`` step turns into its ``dropped_by``; the filters run before dedup and the other steps."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import polars as pl

from pipelines.plugins import load_object

COLUMN = "filtered_by"
RowFilter = Callable[[dict[str, Any]], Any]


def load_filters(paths: Sequence[str]) -> list[tuple[str, RowFilter]]:
    """(name, function) per import path; the name is the part after ':'."""
    out = []
    for path in paths:
        fn = load_object(path, what="row filter")
        if not callable(fn):
            raise ValueError(f"select.custom {path!r} is not callable: a row filter is (row) -> bool | (bool, reason)")
        out.append((path.rpartition(":")[2], fn))
    return out


def verdict(name: str, fn: RowFilter, row: dict[str, Any]) -> str | None:
    """None when the row passes, else the reason it was dropped."""
    out = fn(row)
    ok, reason = (out[0], out[1]) if isinstance(out, tuple) else (out, None)
    if ok:
        return None
    return f"{name}: {reason}" if reason else name


def mark(table: pl.DataFrame, filters: Sequence[tuple[str, RowFilter]]) -> pl.DataFrame:
    """``table`` with ``filtered_by``: the first failing filter's reason, null when every filter passes."""
    reasons = []
    for row in table.iter_rows(named=True):
        reasons.append(next((r for name, fn in filters if (r := verdict(name, fn, row)) is not None), None))
    return table.with_columns(pl.Series(COLUMN, reasons, dtype=pl.Utf8))
