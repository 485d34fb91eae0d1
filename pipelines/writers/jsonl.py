"""JSON lines: the export's ``data.jsonl`` (written to a temp file, renamed at close) and rejects files.

    f = JsonlWriter(folder / "data.jsonl"); f.add(rows) ...; f.close()     # or f.abort()
    write_rejects(rejects, "run/rejects-input.jsonl")
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any

import polars as pl

from pipelines.shards import atomic_write_jsonl, remove_stale_temps
from pipelines.writers.rows import SLICE_ROWS


def json_lines(rows: pl.DataFrame) -> bytes:
    """One JSON object a row, keys in column order, UTF-8 as is. Written by polars (a per-row
    ``json.dumps`` was a third of a 1M-row export); NaN/inf are not JSON, so they become null
    (Parquet and the HF dataset keep them)."""
    buf = io.BytesIO()
    rows.write_ndjson(buf)
    return buf.getvalue()


class JsonlWriter:
    """Rows appended as JSON lines to a temp file beside ``path``; ``close`` renames it into place."""

    def __init__(self, path: Path, slice_rows: int = SLICE_ROWS):
        self.path, self.slice_rows = path, slice_rows
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path)
        fd, self._tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        self._f = os.fdopen(fd, "wb")

    def add(self, rows: pl.DataFrame) -> None:
        for lo in range(0, rows.height, self.slice_rows):  # bounds the bytes of one write
            self._f.write(json_lines(rows.slice(lo, self.slice_rows)))

    def close(self) -> Path:
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        if not self._f.closed:
            self._f.close()
        Path(self._tmp).unlink(missing_ok=True)


def write_rejects(rejects: list[dict[str, Any]], path: Path | str) -> Path:
    """Write rejects as JSONL atomically (an empty list still writes an empty file, so a run shows 0)."""
    path = Path(path)
    atomic_write_jsonl(rejects, path)
    return path
