"""``generate.inputs`` entries -> the input files a run reads, expanded when the run starts.

    expand_inputs(["incoming/*.jsonl", "extra/", "base.parquet"])
    # -> ["incoming/2026-01-01.jsonl", "incoming/2026-01-02.jsonl", "extra/a.jsonl", "base.parquet"]

An entry is a glob (``*``, ``?``, ``[``), a folder of data files, or one input (a file, or a
saved HF dataset folder). Globs and folders expand in sorted order at run time, so a scheduled
run sees the files that arrived since the last one, while the config -- and so its fingerprint
and its run folder -- holds the pattern, never the list. Entries keep their order; a file named
twice is read once (at its first place). Expanded paths keep the spelling of the pattern (relative
stays relative), so nothing of the user's directory layout reaches a record.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from pathlib import Path

from flows.config import REPO, resolve_path

DATA_SUFFIXES = (".jsonl", ".ndjson", ".json", ".parquet")


def is_glob(entry: str) -> bool:
    return any(c in entry for c in "*?[")


def _is_hf_dataset(folder: Path) -> bool:
    from pipelines.readers.hf import looks_like_hf_dataset

    return looks_like_hf_dataset(folder)


def _glob(pattern: str) -> list[str]:
    """Matches of ``pattern`` (relative: from the working directory, else from the repo, as
    :func:`flows.config.resolve_path` does for plain paths), as the pattern spells them."""
    found = glob.glob(pattern, recursive=True)
    if not found and not os.path.isabs(pattern):
        found = glob.glob(pattern, root_dir=REPO, recursive=True)
    return sorted(f for f in found if _usable(resolve_path(f)))


def _usable(path: Path) -> bool:
    """A data file (hidden files and rejects files left aside), or a saved HF dataset folder."""
    if path.name.startswith(".") or path.name.startswith("rejects-"):
        return False
    if path.is_dir():
        return _is_hf_dataset(path)
    return path.is_file() and path.suffix in DATA_SUFFIXES


def expand_entry(entry: str) -> list[str]:
    """The inputs one entry stands for: a glob's matches or a folder's data files (sorted), or the entry."""
    entry = str(entry)
    if is_glob(entry):
        return _glob(entry)
    path = resolve_path(entry)
    if path.is_dir() and not _is_hf_dataset(path):
        return sorted(os.path.join(entry, p.name) for p in path.iterdir() if _usable(p))
    return [entry]


def expand_inputs(entries: Iterable[str]) -> list[str]:
    """Every input file of ``entries`` in read order (see the module docstring)."""
    out: list[str] = []
    seen: set[Path] = set()
    for entry in entries:
        for f in expand_entry(entry):
            key = resolve_path(f)
            if key not in seen:
                seen.add(key)
                out.append(f)
    return out


def patterns(entries: Iterable[str]) -> list[str]:
    """The entries that expand at run time (globs and folders): they may match nothing yet."""
    return [e for e in entries if is_glob(str(e)) or (resolve_path(e).is_dir() and not _is_hf_dataset(resolve_path(e)))]
