"""One process per run folder: ``<run folder>/.lock`` held with ``fcntl.flock`` while a
``build_dataset`` run or a ``python -m flows.stages`` call works in the folder.

The kernel drops a flock when its holder dies (SIGKILL included), so a lock left by a killed
process is simply free: the next run takes it at once, atomically, with no pid check to race on.
The file also records the holder's pid, host and start time, only to name the holder when another
process is refused:

    error: run folder runs/run-1a2b is in use by pid 4242 on host build-3 (since 2026-11-28T07:20:01Z); ...

``wait=True`` (``--wait-lock``) waits for the holder to finish instead of refusing. flock is
per host: two hosts sharing a folder over NFS are not covered (the holder's host is shown to help).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from datetime import UTC, datetime
from pathlib import Path

LOCK_NAME = ".lock"


class RunFolderBusy(RuntimeError):
    """Another live process holds the run folder."""


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "another process"
    return f"pid {info.get('pid')} on host {info.get('host')} (since {info.get('since')})"


class RunLock:
    """Context manager: ``with RunLock(run.root): ...`` (``acquire``/``release`` also work)."""

    def __init__(self, root: Path, wait: bool = False, poll_s: float = 0.5):
        self.root, self.wait, self.poll_s = Path(root), wait, poll_s
        self.path = self.root / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise OSError(e.errno, f"cannot lock run folder {self.root}: {e.strerror}", str(self.path)) from e
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not self.wait:
                    os.close(fd)
                    raise RunFolderBusy(
                        f"run folder {self.root} is in use by {_holder(self.path)}; wait for it to finish "
                        f"(or pass --wait-lock), or use another --run-name") from None
                time.sleep(self.poll_s)
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "since": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)  # a reader sees no holder once it is gone
        except OSError:
            pass
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
