"""Helpers for tests that start servers as separate OS processes (a Dask cluster, a Prefect
server): loopback only, bounded waits, and every process stopped by the test, also on failure.

    with processes() as procs:
        procs.start(["dask", "scheduler", ...], log=tmp / "scheduler.log")
        wait_until(lambda: ..., 60, "the scheduler")
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.5,
               alive: Callable[[], None] | None = None) -> Any:
    """``check()``'s first truthy value within ``timeout`` seconds (``alive()`` may raise early)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if value := check():
                return value
        if alive is not None:
            alive()
        time.sleep(interval)
    raise TimeoutError(f"{what} not ready after {timeout:.0f} s")


class Processes:
    """Processes started in their own sessions; ``stop_all`` ends each group (TERM, then KILL)."""

    def __init__(self) -> None:
        self.procs: list[tuple[subprocess.Popen, Path]] = []

    def start(self, cmd: list[str], log: Path, env: dict[str, str] | None = None,
              cwd: Path | None = None) -> subprocess.Popen:
        fh = open(log, "wb")  # noqa: SIM115 -- closed in stop_all
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                start_new_session=True)
        fh.close()
        self.procs.append((proc, log))
        return proc

    def check_alive(self) -> None:
        for proc, log in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{' '.join(map(str, proc.args))[:120]} exited with {proc.returncode}:\n"
                                   + log.read_text(errors="replace")[-3000:])

    def stop_all(self, timeout: float = 20) -> None:
        for proc, _ in reversed(self.procs):  # the last started (clients) first
            _stop(proc, timeout)


def _stop(proc: subprocess.Popen, timeout: float) -> None:
    """TERM to the process's group (its own session: it and its children), then KILL if it
    outlives ``timeout``. A process already reaped is left alone (its group id may be reused)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout)


@contextlib.contextmanager
def processes() -> Iterator[Processes]:
    procs = Processes()
    try:
        yield procs
    finally:
        procs.stop_all()
