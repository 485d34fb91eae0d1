"""A schedule that really fires: `prefect server start` (SQLite under a temporary PREFECT_HOME,
127.0.0.1, a free port), the flow served by `python -m flows.build_dataset --serve`, a run started
with `prefect deployment run build-dataset/build-dataset`, waited for until Completed with the
dataset on disk (issue 20, part 5). The README's "Schedules" section shows the same commands."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from servers import free_port, processes, wait_until

from pipelines.shards import atomic_write_jsonl

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.integration  # minutes: a server, a served flow and a run on 2 cores


def _api(url: str, path: str, body: dict | None = None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, method="GET" if body is None else "POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"null")


def test_served_deployment_runs_to_completion_on_a_prefect_server(tmp_path):
    started = time.monotonic()
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    base = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    base.update(PREFECT_HOME=str(tmp_path / "prefect-home"), HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1",
                PYTHONPATH=str(REPO))
    client_env = dict(base, PREFECT_API_URL=api)
    data = tmp_path / "input.jsonl"
    atomic_write_jsonl([{"instruction": f"Question {i}: what does item {i} cost?", "input": "",
                         "output": f"It costs {i % 7 + 1} dollars."} for i in range(8)], data)
    out = tmp_path / "runs"
    with processes() as procs:
        procs.start([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                    tmp_path / "server.log", env=base, cwd=tmp_path)
        wait_until(lambda: _api(api, "/health") is True, 300, "the Prefect server", interval=1,
                   alive=procs.check_alive)
        procs.start([sys.executable, "-m", "flows.build_dataset", "--serve", "--cron", "0 3 * * *",
                     "--no-taxonomy", "--no-text", "--model", "tiny", "--backend", "hf", "--input", str(data),
                     "--out-dir", str(out), "--run-name", "served", "--scores", "ifd", "--set", "run.shard_size=4",
                     "--set", "select.steps=[{top_k: {column: score_ifd, fraction: 0.5}}]"],
                    tmp_path / "serve.log", env=client_env, cwd=REPO)
        deployments = wait_until(lambda: _api(api, "/deployments/filter", {}), 300, "the served deployment",
                                 interval=2, alive=procs.check_alive)
        assert deployments[0]["name"] == "build-dataset"
        assert [s["schedule"]["cron"] for s in deployments[0]["schedules"]] == ["0 3 * * *"]

        res = subprocess.run([str(BIN / "prefect"), "deployment", "run", "build-dataset/build-dataset"],
                             env=client_env, cwd=tmp_path, capture_output=True, text=True, timeout=180)
        assert res.returncode == 0, res.stdout + res.stderr
        run_id = re.search(r"UUID:\s*([0-9a-f-]{36})", res.stdout).group(1)

        def finished() -> str | None:
            state = _api(api, f"/flow_runs/{run_id}")["state"]["type"]
            if state in ("FAILED", "CRASHED", "CANCELLED"):
                raise AssertionError(f"flow run {state}:\n" + (tmp_path / "serve.log").read_text()[-4000:])
            return state if state == "COMPLETED" else None

        try:
            wait_until(finished, 600, "the flow run's Completed state", interval=2, alive=procs.check_alive)
        except TimeoutError:
            raise AssertionError((tmp_path / "serve.log").read_text()[-4000:]) from None
    dataset = out / "served" / "dataset"
    assert (dataset / "README.md").exists() and list((dataset / "parquet").glob("*.parquet"))
    print(f"prefect server test wall time: {time.monotonic() - started:.0f} s")
