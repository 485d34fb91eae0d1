"""The target set, split once per run into the rows the condition stage may use and the rows it
must not see (instruct_selectors.holdout): the train stage evaluates on the held-out rows and the
select stage decontaminates the pool against them.

    parts = target_parts(cfg)            # TargetParts(conditioning, held_out, split, fmt), or None
    write_split(run, parts)              # conditional/target-split.json: the ids of both parts
    write_held_out(path, parts)          # the held-out rows as JSONL, QA rows kept as QA (EM/F1)

Every caller recomputes the split from the target file and ``run.seed``: it is a pure function of
them, so the stages agree without reading each other's files (and a stage that is off, such as
condition when no score needs the target, changes nothing)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import polars as pl
from instruct_selectors.holdout import Split, split_table

from flows.config import PipelineConfig, resolve_path
from pipelines.shards import atomic_write_text


@dataclass(frozen=True)
class TargetParts:
    conditioning: pl.DataFrame
    held_out: pl.DataFrame
    split: Split
    fmt: str  # the target file's row format (pipelines.io): "qa" rows are evaluated with EM/F1


def target_parts(cfg: PipelineConfig) -> TargetParts | None:
    """The target's two parts under ``score.target_holdout`` and ``run.seed`` (None: no target)."""
    from pipelines.io import read_examples

    if not cfg.score.target:
        return None
    res = read_examples(resolve_path(cfg.score.target), strict_encoding=cfg.io.strict_encoding)
    cond, held, split = split_table(res.table, cfg.score.target_holdout, cfg.run.seed)
    return TargetParts(cond, held, split, res.fmt)


def write_split(run, parts: TargetParts) -> Path:
    """``conditional/target-split.json``: the ids of each part (and why none is held out, if so)."""
    path = run.conditional / "target-split.json"
    text = json.dumps(asdict(parts.split), indent=1, sort_keys=True) + "\n"
    if not path.exists() or path.read_text() != text:  # rewritten only when the split changed
        atomic_write_text(path, text)
    return path


def write_held_out(path: Path, parts: TargetParts) -> Path:
    """The held-out rows as JSONL, written only when changed; a QA target stays QA (question,
    context, answer) so the evaluation reports exact match and F1 on it."""
    keys = ("question", "context", "answer") if parts.fmt == "qa" else ("instruction", "context", "response")
    rows = [dict(zip(keys, r, strict=True))
            for r in parts.held_out.select("instruction", "context", "response").iter_rows()]
    text = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows)
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        atomic_write_text(path, text)
    return path
