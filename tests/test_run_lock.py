"""One process per run folder: a live holder refuses a second process (or makes it wait), a
killed holder's lock is taken over; build_dataset and the stage CLI both take it."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from flows import run_lock
from flows.run_folder import RunFolder
from flows.run_lock import RunFolderBusy, RunLock

REPO = Path(__file__).resolve().parents[1]

HOLD = """
import sys
from flows.run_lock import RunLock
lock = RunLock(sys.argv[1]).acquire()
print("held", flush=True)
sys.stdin.readline()  # hold until the test says so, or closes the pipe
"""
START_S = 120  # the most a holder may take to start (imports included) on a busy machine


def _holder(root: Path) -> subprocess.Popen:
    """A process holding the lock on ``root`` until a line reaches its stdin (or it is killed)."""
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(root)], cwd=REPO,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    if not select.select([p.stdout], [], [], START_S)[0]:
        p.kill()
        p.wait()
        pytest.fail(f"the lock holder did not start within {START_S} s")
    assert p.stdout.readline().strip() == "held"
    return p


def _end(p: subprocess.Popen) -> None:
    """Let the holder finish and exit (its lock goes with it)."""
    p.communicate("done\n", timeout=START_S)


def test_live_holder_refuses_with_pid_and_host(tmp_path):
    p = _holder(tmp_path)
    try:
        with pytest.raises(RunFolderBusy) as e:
            RunLock(tmp_path).acquire()
        assert f"pid {p.pid} on host {socket.gethostname()}" in str(e.value)
        assert str(tmp_path) in str(e.value)
    finally:
        p.kill()
        p.wait()


def test_wait_gets_the_lock_when_the_holder_ends(tmp_path, monkeypatch):
    p = _holder(tmp_path)
    polls = []

    def poll(seconds):  # the waiter found the lock held: the holder ends while it waits
        polls.append(seconds)
        if p.poll() is None:
            _end(p)

    monkeypatch.setattr(run_lock, "time", SimpleNamespace(sleep=poll))
    with RunLock(tmp_path, wait=True, poll_s=0.05) as lock:
        assert polls == [0.05]  # it did wait for the holder, once, for poll_s
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert p.returncode == 0
    assert lock.path.read_text() == ""  # released: no holder named


def test_lock_of_a_killed_process_is_taken_over(tmp_path):
    p = _holder(tmp_path)
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
    p = _holder(run.root)
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
    p = _holder(root)
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
