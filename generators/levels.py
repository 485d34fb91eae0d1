"""One generation level = one folder of shards, redone only where its input changed.

    outcome = run_level(items, run_dir / "subjects", shard_size, process)

Built on :func:`pipelines.shards.run_sharded` (atomic shards, resume by skipping shards on disk).
On top of it, each level keeps ``inputs.json``: a fingerprint of the input chunk behind every
shard. When a user edits an upstream table (say one subject) and runs again, only the shards
whose input chunk changed are deleted and regenerated; the rest are kept. A killed run resumes
the same way: a shard on disk whose fingerprint matches is never regenerated.

Also: stable per-item seeds (:func:`derive_seed`) so an item gets the same sampling whichever
shard it lands in, and :func:`pipelines.shards.write_shards` for whole-table steps (dedup) that are cheap
to redo on every run.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from pipelines.shards import (
    atomic_write_text,
    chunk,
    list_shards,
    read_rejects,
    read_shards,
    rejects_path,
    run_sharded,
    shard_path,
    write_text_if_changed,
)

MANIFEST = "inputs.json"
ITEMS = "items.jsonl"


def fingerprint(value: Any) -> str:
    """Content hash of any JSON-able value (key order does not matter)."""
    payload = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8")
    return hashlib.blake2b(payload, digest_size=10).hexdigest()


def derive_seed(seed: int, *parts: Any) -> int:
    """A 31-bit seed from the run seed and a description of what is being sampled."""
    return int(fingerprint([seed, *parts]), 16) % (2**31 - 1)


@dataclass
class LevelOutcome:
    rows: int
    rejects: int
    shards: int
    skipped_shards: int  # found on disk with the same input: not regenerated
    stale_shards: int  # found on disk with a different input: deleted and regenerated

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def prune_level(folder: Path, hashes: list[str]) -> int:
    """Delete shards whose recorded input differs from now (or that lie past the end)."""
    manifest = folder / MANIFEST
    old = json.loads(manifest.read_text()) if manifest.exists() else {}
    stale = 0
    for path in list_shards(folder):
        index = int(path.stem.split("-")[1])
        if index >= len(hashes) or old.get(str(index)) != hashes[index]:
            path.unlink()
            rejects_path(folder, index).unlink(missing_ok=True)
            stale += 1
    for path in folder.glob("rejects-*.jsonl"):  # rejects left by a shard that was never written
        if not shard_path(folder, int(path.stem.split("-")[1])).exists():
            path.unlink()
    # Written after pruning and before generating: every shard on disk now matches the manifest.
    atomic_write_text(manifest, json.dumps({str(i): h for i, h in enumerate(hashes)}, indent=1))
    return stale


def plan_items(items: Sequence[Any], folder: Path, shard_size: int, params: Any) -> tuple[list[Any], int, list[int]]:
    """Write a level's work items (``items.jsonl``, one JSON line each) for shard tasks that may
    run in other processes, and delete the shards whose chunk of items or ``params`` changed.
    Returns (the items as every task reads them back, how many shards were stale, the shards to
    make). Every path goes through the JSON lines, so a shard is the same bytes wherever it ran."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps(it, ensure_ascii=False, sort_keys=True, default=str) + "\n" for it in items)
    items = [json.loads(line) for line in lines.splitlines()]
    hashes = [fingerprint([params, list(part)]) for part in chunk(items, shard_size)]
    stale = prune_level(folder, hashes)
    write_text_if_changed(lines, folder / ITEMS)
    return items, stale, [i for i in range(len(hashes)) if not shard_path(folder, i).exists()]


def read_items(folder: Path, index: int, shard_size: int) -> list[Any]:
    """Shard ``index``'s chunk of the items :func:`plan_items` wrote."""
    with open(Path(folder) / ITEMS, encoding="utf-8") as fh:
        return [json.loads(line) for line in itertools.islice(fh, index * shard_size, (index + 1) * shard_size)]


def run_level(
    items: Sequence[Any],
    folder: Path,
    shard_size: int,
    process: Callable[[Sequence[Any]], tuple[pl.DataFrame, list[dict[str, Any]]]],
    params: Any = None,
    progress: Callable[[int], None] | None = None,
) -> LevelOutcome:
    """Run ``process`` shard by shard over ``items`` (JSON-able) into ``folder``.

    ``params`` (prompt settings, seed, model) is part of every shard's fingerprint, so changing
    them regenerates the level too.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    hashes = [fingerprint([params, list(part)]) for part in chunk(items, shard_size)]
    stale = prune_level(folder, hashes)
    outcomes = run_sharded(items, folder, shard_size, process, progress=progress)
    return LevelOutcome(
        rows=sum(o.rows for o in outcomes),
        rejects=sum(o.rejects for o in outcomes),
        shards=len(outcomes),
        skipped_shards=sum(o.skipped for o in outcomes),
        stale_shards=stale,
    )


def read_level(folder: Path, schema: dict[str, Any] | None = None) -> pl.DataFrame:
    """All shards of a level as one table (empty table with ``schema`` when there are none)."""
    if not list_shards(folder):
        return pl.DataFrame(schema=schema or {})
    return read_shards(folder)


def level_rejects(folder: Path) -> list[dict[str, Any]]:
    return read_rejects(folder) if Path(folder).exists() else []
