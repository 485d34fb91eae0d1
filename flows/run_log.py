"""What a run says in Prefect's log as it goes (the UI's log pane follows a scheduled run by it):
one line per shard (rows, tokens, seconds, tokens/s) and per stage (counts, notes, reused or run)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipelines.report import stage_notes


def shard_line(stage: str, index: Any, rows: int, tokens: int, seconds: float) -> str:
    rate = f", {tokens / seconds:,.0f} tokens/s" if tokens and seconds > 0 else ""
    return f"{stage} shard {index}: {rows:,} rows, {tokens:,} tokens, {seconds:.1f} s{rate}"


def stage_lines(record: Mapping[str, Any], reused: bool) -> list[str]:
    """The stage's summary line, then one line per note (rows cut, rejects, rescored or reused)."""
    counts = ", ".join(f"{k.replace('_', ' ')} {record[k]:,}" for k in ("rows_in", "rows_out", "rejects")
                       if isinstance(record.get(k), int))
    how = "reused (its inputs are unchanged)" if reused else f"ran in {record.get('seconds', 0):.1f} s"
    return [f"{record['stage']}: {how}" + (f"; {counts}" if counts else ""),
            *(f"{record['stage']}: {note}" for note in stage_notes(record))]
