"""Helpers shared by benchmarks: where the shared datasets live, and reading JSONL."""

from __future__ import annotations

import json
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def shared_datasets() -> Path:
    """``../shared/datasets`` beside the repo (override with SHARED_DATASETS); clear error if absent."""
    path = Path(os.environ.get("SHARED_DATASETS", REPO.parent / "shared" / "datasets"))
    if not path.is_dir():
        raise SystemExit(f"benchmark data not found at {path} (set SHARED_DATASETS)")
    return path


def read_jsonl(path: Path, limit: int | None = None) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rows.append(json.loads(line))
                if limit and len(rows) >= limit:
                    break
    return rows
