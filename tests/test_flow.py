"""The Prefect flow end to end on the tiny model: default runner, resume after SIGKILL, Dask, serve."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from pipelines.shards import atomic_write_jsonl

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _input_rows(n: int) -> list[dict]:
    rows = []
    for i in range(n):
        ctx = f"Item {i} costs {i % 7 + 1} dollars and weighs {i % 5 + 2} kilograms." if i % 2 else ""
        rows.append({"instruction": f"Question {i}: what does item {i} cost?", "input": ctx,
                     "output": f"It costs {i % 7 + 1} dollars." + " Really." * (i % 3)})
    return rows


def _config(tmp: Path, rows: int, shard_size: int, scores: str = "ifd,ctx_loss") -> list[str]:
    data = tmp / "input.jsonl"
    if not data.exists():
        atomic_write_jsonl(_input_rows(rows), data)
    return ["--no-taxonomy", "--no-text", "--model", "tiny", "--backend", "hf", "--input", str(data),
            "--out-dir", str(tmp / "runs"), "--scores", scores,
            "--set", f"run.shard_size={shard_size}",
            "--set", 'select.steps=[{dedup: {near: true}}, {top_k: {column: score_ifd, fraction: 0.5}}]']


def _env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(PREFECT_HOME=str(tmp / "prefect-home"), HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1",
               PREFECT_LOGGING_LEVEL="WARNING")
    return env


def _run(args: list[str], tmp: Path, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.build_dataset", *args], cwd=REPO, env=_env(tmp),
                          capture_output=True, text=True, timeout=600, **kw)


def _dataset_files(run_dir: Path) -> dict[str, bytes]:
    files = {}
    for p in sorted((run_dir / "dataset").rglob("*")):
        if p.is_file() and (p.suffix in (".parquet", ".jsonl")) and "hf" not in p.parts:
            files[str(p.relative_to(run_dir))] = p.read_bytes()
    return files


def test_help_lists_stages():
    out = subprocess.run([sys.executable, "-m", "flows.build_dataset", "--help"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    for stage in ("generate_taxonomy", "generate_text", "score", "select", "export", "train"):
        assert stage in out


def test_bad_config_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[score]\nscores = ['nonsense']\n")
    res = _run(["--config", str(bad)], tmp_path)
    assert res.returncode == 2
    assert "score.scores" in res.stderr and str(bad) in res.stderr


def test_first_run_on_a_new_prefect_home_completes(tmp_path):
    """What a new user runs: the user's environment, an empty PREFECT_HOME, no other Prefect setting.
    (Prefect must create and migrate its database first; the product allows for that.)"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_HOME"] = str(tmp_path / "new-prefect-home")
    res = subprocess.run([sys.executable, "-m", "flows.build_dataset", *_config(tmp_path, rows=12, shard_size=6),
                          "--run-name", "first"], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "rows kept: 6" in res.stdout and "total" in res.stdout  # the stage table with seconds
    assert (tmp_path / "runs" / "first" / "dataset" / "README.md").exists()


def test_failure_prints_one_clear_line_and_keeps_the_traceback_in_the_log(tmp_path):
    bad = tmp_path / "taxonomy.yaml"
    bad.write_text("disciplines: [unclosed\n")
    res = _run(["--model", "tiny", "--backend", "hf", "--out-dir", str(tmp_path / "runs"), "--no-text",
                "--set", f"generate.taxonomy.path={bad}"], tmp_path)
    assert res.returncode == 1
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout
    assert str(bad) in res.stderr and res.stderr.strip().startswith("error:")
    # Caught before Prefect started or a model loaded: no run folder was made.
    assert not (tmp_path / "runs").exists()


def test_sigkill_mid_scoring_then_resume_gives_identical_output(tmp_path):
    args = _config(tmp_path, rows=240, shard_size=4)
    # Uninterrupted reference run in its own folder.
    ref = _run([*args, "--run-name", "reference"], tmp_path)
    assert ref.returncode == 0, ref.stderr[-3000:]
    ref_dir = tmp_path / "runs" / "reference"

    proc = subprocess.Popen([sys.executable, "-m", "flows.build_dataset", *args, "--run-name", "killed"],
                            cwd=REPO, env=_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    scored = tmp_path / "runs" / "killed" / "scored"
    deadline = time.time() + 300
    while time.time() < deadline and len(list(scored.glob("part-*.parquet"))) < 3 and proc.poll() is None:
        time.sleep(0.02)
    n_before = len(list(scored.glob("part-*.parquet")))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    n_shards = len(list((tmp_path / "runs" / "killed" / "examples").glob("part-*.parquet")))
    assert 3 <= n_before < n_shards, "the kill must land mid-scoring"
    before = {p.name: p.stat().st_mtime_ns for p in scored.glob("part-*.parquet")}

    resumed = _run([*args, "--run-name", "killed"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    killed_dir = tmp_path / "runs" / "killed"
    # Shards finished before the kill were not redone.
    for name, mtime in before.items():
        assert (scored / name).stat().st_mtime_ns == mtime
    ref_files, got_files = _dataset_files(ref_dir), _dataset_files(killed_dir)
    assert ref_files and ref_files.keys() == got_files.keys()
    for name in ref_files:
        assert ref_files[name] == got_files[name], f"{name} differs after resume"


def test_dask_runner_gives_same_output_as_default(tmp_path):
    pytest.importorskip("prefect_dask")
    args = _config(tmp_path, rows=40, shard_size=10)
    a = _run([*args, "--run-name", "threads"], tmp_path)
    assert a.returncode == 0, a.stderr[-3000:]
    b = _run([*args, "--run-name", "dask", "--task-runner", "dask", "--dask-workers", "2"], tmp_path)
    assert b.returncode == 0, b.stderr[-3000:]
    ta = pl.read_parquet(tmp_path / "runs" / "threads" / "selected" / "all.parquet")
    tb = pl.read_parquet(tmp_path / "runs" / "dask" / "selected" / "all.parquet")
    assert ta["id"].to_list() == tb["id"].to_list()
    assert ta["keep"].to_list() == tb["keep"].to_list()
    for col in [c for c in ta.columns if c.startswith("score_")]:
        a_vals, b_vals = ta[col].to_list(), tb[col].to_list()
        assert all((x is None and y is None) or abs(x - y) < 1e-4 for x, y in zip(a_vals, b_vals, strict=True))


def test_stage_records_and_report(tmp_path):
    args = _config(tmp_path, rows=30, shard_size=8)
    res = _run([*args, "--run-name", "r"], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    run_dir = tmp_path / "runs" / "r"
    assert "run folder:" in res.stdout and str(run_dir) in res.stdout
    collect = json.loads((run_dir / "stages" / "collect.json").read_text())
    select = json.loads((run_dir / "stages" / "select.json").read_text())
    assert collect["rows_out"] == 30
    assert 0 < select["rows_out"] <= 15
    assert any(p.suffix == ".png" for p in run_dir.rglob("*.png"))


def test_serve_registers_deployment_with_schedule(tmp_path, monkeypatch):
    from prefect.client.orchestration import get_client
    from prefect.testing.utilities import prefect_test_harness

    from flows.build_dataset import config_from_args, configured_flow, make_deployment, parse_args

    args = parse_args([*_config(tmp_path, rows=4, shard_size=4), "--serve", "--cron", "0 3 * * *"])
    cfg = config_from_args(args)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect-home"))
    with prefect_test_harness(server_startup_timeout=120):
        deployment = make_deployment(configured_flow(args), cfg, args.cron)
        deployment_id = deployment.apply()

        async def read():
            async with get_client() as client:
                return await client.read_deployment(deployment_id)

        import asyncio

        registered = asyncio.run(read())
    assert registered.name == "build-dataset"
    crons = [s.schedule.cron for s in registered.schedules]
    assert crons == ["0 3 * * *"]
    assert registered.parameters["config"]["model"]["model"] == "tiny"
