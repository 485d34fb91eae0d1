"""Prefect's log of a run tells its story (issue 38): each shard's rows, tokens, seconds and
tokens/s, and each stage's counts and notes, read back from the Prefect API after a tiny run; a
second run says which stages it reused."""

from __future__ import annotations

import asyncio
import re

import pytest

from flows.run_log import shard_line, stage_lines
from pipelines.shards import atomic_write_jsonl


def test_the_lines_say_rows_tokens_speed_and_notes():
    assert shard_line("score", 3, 64, 12000, 10.0) == "score shard 3: 64 rows, 12,000 tokens, 10.0 s, 1,200 tokens/s"
    assert shard_line("select", 0, 5, 0, 0.0) == "select shard 0: 5 rows, 0 tokens, 0.0 s"
    rec = {"stage": "score", "seconds": 4.25, "rows_in": 10, "rows_out": 10,
           "notes": ["rescored: score.custom mypkg.quality changed"]}
    assert stage_lines(rec, reused=False) == ["score: ran in 4.2 s; rows in 10, rows out 10",
                                              "score: rescored: score.custom mypkg.quality changed"]
    assert stage_lines(rec, reused=True)[0].startswith("score: reused (its inputs are unchanged)")


def _flow_logs(flow_run_id) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    async def read():
        async with get_client() as client:
            logs = await client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
            return [log.message for log in logs]

    return asyncio.run(read())


@pytest.mark.slow
def test_a_runs_shard_and_stage_lines_reach_the_prefect_api(tmp_path, monkeypatch):
    from prefect.logging.handlers import APILogWorker
    from prefect.testing.utilities import prefect_test_harness

    from flows.build_dataset import build_dataset
    from flows.config import load_config

    rows = [{"instruction": f"Question {i}: what does item {i} cost?", "input": "",
             "output": f"It costs {i % 7 + 1} dollars."} for i in range(10)]
    atomic_write_jsonl(rows, tmp_path / "in.jsonl")
    cfg = load_config(overrides=[
        "generate.taxonomy.enabled=false", "generate.text.enabled=false", f"generate.inputs=[{tmp_path / 'in.jsonl'}]",
        "model.model=tiny", "model.backend=hf", "score.scores=[ifd]", "run.shard_size=4",
        "select.steps=[{top_k: {column: score_ifd, fraction: 0.5}}]", f"run.out_dir={tmp_path / 'runs'}",
        "run.name=logged"])
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect-home"))
    monkeypatch.setenv("PREFECT_LOGGING_LEVEL", "INFO")
    with prefect_test_harness(server_startup_timeout=300):
        first = build_dataset(cfg.model_dump(mode="json"), return_state=True)
        second = build_dataset(cfg.model_dump(mode="json"), return_state=True)
        APILogWorker.drain_all(timeout=30)  # the log lines are sent in batches: all of them now
        logs = _flow_logs(first.state_details.flow_run_id)
        again = _flow_logs(second.state_details.flow_run_id)
    shards = [m for m in logs if m.startswith("score shard ")]
    assert len(shards) == 3 and all(" rows, " in m and " tokens, " in m and "tokens/s" in m for m in shards)
    assert any(m.startswith("collect: ran in ") and "rows out 10" in m for m in logs)
    assert any(m.startswith("score: ") and "rows rescored" in m for m in logs)  # the stage's notes
    assert any(m.startswith("select: ran in ") and "rows out 5" in m for m in logs)
    assert any(m.startswith("score: reused") for m in again) and not any("score shard" in m for m in again)


def test_the_closing_line_splits_the_wall_time_and_the_parts_add_up():
    from flows.run_log import seconds_line

    result = {"stages": [{"stage": "score", "seconds": 30.0}, {"stage": "select", "seconds": 2.5}],
              "flow_seconds": 36.0}
    line = seconds_line(wall=50.0, before_flow=6.0, flow_call=43.0, result=result)
    assert line == ("50.0 s in all: stages 32.5 s, Prefect's start and bookkeeping 7.0 s, "
                    "imports and checks before it 6.0 s, between the stages 3.5 s")
    parts = [float(re.findall(r"([\d.]+) s$", x)[0]) for x in line.split(": ", 1)[1].split(", ")]
    assert sum(parts) == 50.0 - 1.0  # the last second: printing after the flow returned


def test_a_prefect_home_whose_parents_are_missing_is_made(tmp_path):
    """Prefect makes PREFECT_HOME but not its parents, and its server then cannot open its
    database: the command waited its 10-minute start-up limit before failing."""
    import os
    import subprocess
    import sys

    home = tmp_path / "a" / "b" / "prefect"
    env = dict(os.environ, PREFECT_HOME=str(home))
    subprocess.run([sys.executable, "-c", "import flows.build_dataset"], env=env, check=True, timeout=120,
                   cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert home.is_dir()
