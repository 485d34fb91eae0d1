"""Resume keyed by content: a stage is skipped only when what it was made from is unchanged.

Each stage record carries ``input_key``: a hash of the config, of the upstream records' keys and
of the bytes of the user files the stage reads (taxonomy, passages, inputs, target, eval sets),
and ``output_key``: the names, sizes and times of the files it wrote. A stage whose stored
``input_key`` equals the one computed now is skipped without touching a file; any change -- an
edited input row, a new target row, an upstream stage that wrote other files -- makes it run
again, and stages below it in turn. Within a stage, shards are keyed by content too (a scored
shard records the hash of the examples shard it was made from), so a changed row rescores only
its shard. Prefect's own result cache is not used: nothing of it can hide a changed input, and
nothing in the run folder is ever unpickled."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from flows.config import PipelineConfig, resolve_path
from flows.run_folder import RunFolder
from pipelines.plugins import plugin_code


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes (of every file under a folder, by relative name), streamed."""
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode() + b"\0")
        with open(f, "rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
    return h.hexdigest()


def content_digest(path: Path) -> str:
    """sha256 of a file's bytes alone (not its name): a shard renumbered keeps its digest."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def input_key(cfg: PipelineConfig, stage: str, files: Iterable[str], upstream: Iterable[dict[str, Any]],
              code: Mapping[str, Mapping[str, str]] | None = None) -> str:
    """What ``stage`` is made from: config, upstream stages' outputs, the bytes of the user
    ``files`` it reads (its StageSpec's ``files``) and the source of the user ``code`` it runs
    (:func:`plugin_keys`)."""
    parts = {"stage": stage, "config": cfg.fingerprint(),
             "upstream": [[r.get("stage"), r.get("output_key") or r.get("input_key")] for r in upstream],
             "files": {p: file_digest(resolve_path(p)) for p in files if resolve_path(p).exists()}}
    if code:  # absent from the key when no plugin runs: keys of runs without plugins stay as they were
        parts["code"] = code
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def plugin_keys(plugins: Mapping[str, list[str]]) -> dict[str, dict[str, str]]:
    """{config key: {module: digest of its package's source}} of the user code a stage runs."""
    return {key: plugin_code(paths) for key, paths in plugins.items() if paths}


def plugin_notes(redo: str, old: Mapping[str, Mapping[str, str]] | None, new: Mapping[str, Mapping[str, str]]) -> list[str]:
    """Why a stage ran again, plugin by plugin: ``["rescored: score.custom mypkg.quality changed"]``."""
    if old is None:
        return []
    return [f"{redo}: {key} {module} changed" for key, modules in new.items()
            for module, digest in modules.items() if (old.get(key) or {}).get(module) not in (None, digest)]


def output_key(run: RunFolder, folders: Iterable[str]) -> str:
    """Names, sizes and modification times of the stage's files: a file rewritten (even with the
    same bytes) changes it, an untouched one does not."""
    h = hashlib.sha256()
    for part in folders:
        folder = run.root / part
        for f in sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []:
            st = f.stat()
            h.update(f"{f.relative_to(run.root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def keyed(run: RunFolder, record: dict[str, Any], key: str, folders: Iterable[str]) -> dict[str, Any]:
    """Save ``record`` with its input key and the output key of its ``folders`` (after the stage's own write)."""
    return run.write_record({**record, "input_key": key, "output_key": output_key(run, folders)})
