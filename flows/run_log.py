"""What a run says in Prefect's log as it goes (the UI's log pane follows a scheduled run by it):
one line per shard (rows, tokens, seconds, tokens/s) and per stage (counts, notes, reused or run);
and what the command prints at its end (seconds and rows per stage, where the wall time went)."""

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


def stage_table(records: list[dict]) -> str:
    """Seconds and rows per stage, as printed at the end of a run."""
    lines = [f"{'stage':<18} {'seconds':>8} {'rows in':>8} {'rows out':>8} {'rejects':>8}"]
    for r in records:
        cells = [r.get(k) for k in ("rows_in", "rows_out", "rejects")]
        lines.append(f"{r['stage']:<18} {r.get('seconds', 0):>8.1f} "
                     + " ".join(f"{'' if c is None else c:>8}" for c in cells))
    lines.append(f"{'total':<18} {sum(r.get('seconds', 0) for r in records):>8.1f}")
    return "\n".join(lines)


def seconds_line(wall: float, before_flow: float, flow_call: float, result: dict) -> str:
    """Where a run's wall time went: the stages, Prefect (its temporary server, the flow run's
    bookkeeping), what ran before it (imports, config, input checks) and the flow's own work
    between stages (records, artifacts, the report)."""
    stages = sum(r.get("seconds", 0) for r in result["stages"])
    body = result.get("flow_seconds", flow_call)
    return (f"{wall:.1f} s in all: stages {stages:.1f} s, Prefect's start and bookkeeping {flow_call - body:.1f} s, "
            f"imports and checks before it {before_flow:.1f} s, between the stages {body - stages:.1f} s")
