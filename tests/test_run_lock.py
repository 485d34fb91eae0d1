"""One process per run folder: a live holder refuses a second process (or makes it wait), a
killed holder's lock is taken over; build_dataset and the stage CLI both take it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.run_folder import RunFolder
from flows.run_lock import RunFolderBusy, RunLock

REPO = Path(__file__).resolve().parents[1]

HOLD = """
import sys, time
from flows.run_lock import RunLock
lock = RunLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


def _holder(root: Path, seconds: float) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(root), str(seconds)], cwd=REPO,
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_live_holder_refuses_with_pid_and_host(tmp_path):
    p = _holder(tmp_path, 30)
    try:
        with pytest.raises(RunFolderBusy) as e:
            RunLock(tmp_path).acquire()
        assert f"pid {p.pid} on host {socket.gethostname()}" in str(e.value)
        assert str(tmp_path) in str(e.value)
    finally:
        p.kill()
        p.wait()


def test_wait_gets_the_lock_when_the_holder_ends(tmp_path):
    p = _holder(tmp_path, 1.0)
    t = time.monotonic()
    with RunLock(tmp_path, wait=True, poll_s=0.05) as lock:
        assert time.monotonic() - t > 0.3  # it did wait for the holder
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    p.wait()
    assert lock.path.read_text() == ""  # released: no holder named


def test_lock_of_a_killed_process_is_taken_over(tmp_path):
    p = _holder(tmp_path, 60)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == p.pid  # stale file left behind
    with RunFolder(tmp_path).lock() as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
        with pytest.raises(RunFolderBusy):  # and now it is ours: others are refused
            RunLock(tmp_path).acquire()


def test_stage_cli_refuses_a_held_folder(tmp_path):
    run = RunFolder(tmp_path / "run")
    run.root.mkdir()
    from flows.config import PipelineConfig

    run.config_file.write_text(PipelineConfig().model_dump_json())
    p = _holder(run.root, 60)
    try:
        r = subprocess.run([sys.executable, "-m", "flows.stages", "collect", str(run.root)], cwd=REPO,
                           capture_output=True, text=True, timeout=300)
    finally:
        p.kill()
        p.wait()
    assert r.returncode == 1
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"pid {p.pid}" in errors[0] and "in use" in errors[0]
    assert not run.examples.exists()  # no stage ran


def test_build_dataset_refuses_a_held_folder(tmp_path, capsys, monkeypatch):
    from flows import build_dataset

    data = tmp_path / "in.jsonl"
    data.write_text(json.dumps({"instruction": "Say hi.", "input": "", "output": "Hi."}) + "\n")
    args = ["--no-taxonomy", "--no-text", "--model", "tiny", "--backend", "hf", "--input", str(data),
            "--out-dir", str(tmp_path / "runs"), "--run-name", "r"]
    root = tmp_path / "runs" / "r"
    p = _holder(root, 60)
    ran = []
    monkeypatch.setattr(build_dataset, "configured_flow", lambda a: lambda **kw: ran.append(kw))
    try:
        assert build_dataset.main(args) == 1
    finally:
        p.kill()
        p.wait()
    err = capsys.readouterr().err
    assert f"error: run folder {root} is in use by pid {p.pid}" in err
    assert ran == []  # refused before any stage
