"""A real Dask cluster: `dask scheduler` and two `dask worker` processes on 127.0.0.1 (one thread
each), the flow run against it with --dask-address; Bonito generation and scoring are mapped over
the workers, and the dataset files equal a run on the default thread runner (issue 20, part 4)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from servers import free_port, processes, wait_until

from pipelines.shards import atomic_write_jsonl

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow  # 100 s on 2 shared cores: a cluster, two flow runs


def _env(tmp: Path) -> dict[str, str]:
    return dict(os.environ, PREFECT_HOME=str(tmp / "prefect-home"), HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1",
                PREFECT_LOGGING_LEVEL="WARNING", PYTHONPATH=str(REPO))


def _args(tmp: Path) -> list[str]:
    data = tmp / "input.jsonl"
    atomic_write_jsonl([{"instruction": f"Question {i}: what does item {i} cost?", "input": "",
                         "output": f"It costs {i % 7 + 1} dollars."} for i in range(16)], data)
    # Bonito on 4 passages (2 task types -> 3 shards of 3 items) and 16 input rows (4 shards).
    return ["--no-taxonomy", "--model", "tiny", "--backend", "hf", "--input", str(data),
            "--out-dir", str(tmp / "runs"), "--scores", "ifd", "--set", "run.shard_size=3",
            "--set", "generate.text.max_passages=4", "--set", "generate.text.max_tokens=24",
            "--set", "model.threads=1",  # the same torch threads everywhere: the same float sums
            "--set", "select.steps=[{top_k: {column: score_ifd, fraction: 0.5}}]"]


def _flow(args: list[str], tmp: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "flows.build_dataset", *args], cwd=REPO, env=_env(tmp),
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]


def _dataset(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted((run / "dataset").rglob("*"))
            if p.is_file() and p.suffix in (".parquet", ".jsonl")}


def test_flow_on_a_two_worker_dask_cluster_equals_the_thread_runner(tmp_path):
    args = _args(tmp_path)
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = _env(tmp_path)
    with processes() as procs:
        procs.start([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                    tmp_path / "scheduler.log", env=env, cwd=REPO)
        for i in range(2):
            procs.start([str(BIN / "dask"), "worker", address, "--nthreads", "1", "--nworkers", "1",
                         "--host", "127.0.0.1", "--no-dashboard", "--local-directory", str(tmp_path / f"w{i}"),
                         "--name", f"w{i}"], tmp_path / f"worker{i}.log", env=env, cwd=REPO)

        def two_workers() -> bool:
            from distributed import Client

            with Client(address, timeout=5) as client:
                return len(client.scheduler_info()["workers"]) == 2

        wait_until(two_workers, 120, "two dask workers", interval=1, alive=procs.check_alive)
        _flow([*args, "--run-name", "dask", "--task-runner", "dask", "--dask-address", address], tmp_path)

        def tasks_run(dask_worker) -> int:
            return dask_worker.state.transition_counter

        from distributed import Client

        with Client(address, timeout=10) as client:
            per_worker = client.run(tasks_run)
        assert len(per_worker) == 2 and all(n > 0 for n in per_worker.values()), per_worker  # both worked
        worker_logs = "".join((tmp_path / f"worker{i}.log").read_text(errors="replace") for i in range(2))
    _flow([*args, "--run-name", "threads"], tmp_path)

    threads, dask = _dataset(tmp_path / "runs" / "threads"), _dataset(tmp_path / "runs" / "dask")
    assert threads and threads.keys() == dask.keys()
    for name in threads:
        assert threads[name] == dask[name], name
    assert "Traceback" not in worker_logs, worker_logs[-3000:]
