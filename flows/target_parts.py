"""The target set, split once per run into the rows the condition stage may use and the rows it
must not see (instruct_selectors.holdout): the train stage evaluates on the held-out rows and the
select stage decontaminates the pool against them. With ``select.auto`` the held-out rows split
once more: the choose stage grades its proxy fine-tunes on ``choosing`` and the train stage
evaluates on the rest (``evaluation``), so the rows that picked the ranking never grade it.

    parts = target_parts(cfg)            # TargetParts(conditioning, held_out, split, fmt, choosing), or None
    write_split(run, parts)              # conditional/target-split.json: the ids of both parts
    write_held_out(path, parts)          # the evaluation rows as JSONL, QA rows kept as QA (EM/F1)
    write_held_out(path, parts, parts.choosing)   # the choose stage's rows

Every caller recomputes the split from the target file and ``run.seed``: it is a pure function of
them, so the stages agree without reading each other's files (and a stage that is off, such as
condition when no score needs the target, changes nothing)."""

from __future__ import annotations

import functools
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
    choosing: pl.DataFrame | None = None  # held-out rows the choose stage grades on (select.auto)

    @property
    def evaluation(self) -> pl.DataFrame:
        """The held-out rows the train stage evaluates on: all of them bar the choose stage's."""
        if self.choosing is None:
            return self.held_out
        return self.held_out.filter(~pl.col("id").is_in(self.choosing["id"].to_list()))


@functools.lru_cache(maxsize=4)
def _split(path: str, stamp: tuple[int, int], holdout: float, seed: int, strict: bool):
    """(conditioning, held-out, split, format) of the target file (``stamp``: its mtime and size,
    so an edited file is read again): the stages ask for it several times a run."""
    from pipelines.io import read_examples

    res = read_examples(Path(path), strict_encoding=strict)
    return (*split_table(res.table, holdout, seed), res.fmt)


def _target_split(cfg: PipelineConfig):
    path = resolve_path(cfg.score.target)
    st = path.stat()
    return _split(str(path), (st.st_mtime_ns, st.st_size), cfg.score.target_holdout, cfg.run.seed,
                  cfg.io.strict_encoding)


def auto_candidates(cfg: PipelineConfig) -> list[str]:
    """The rankings the choose stage tries against the configured one (flows/config_choose.py):
    ``select.auto`` as given; none when it is false; unset, the guard (``["longest"]``) when there is
    a top_k to vary and the target holds out at least GUARD_MIN_ROWS rows to grade on."""
    from flows.config_choose import GUARD, GUARD_MIN_ROWS

    auto = cfg.select.auto
    if auto is not None:
        return list(auto or [])
    if not cfg.score.target or cfg.score.target_holdout == 0 or not any(s.name == "top_k" for s in cfg.select.steps):
        return []
    if not resolve_path(cfg.score.target).exists():
        return []
    held = _target_split(cfg)[1]
    _, choosing, _ = split_table(held, cfg.select.proxy.share, cfg.run.seed + 1)
    return list(GUARD) if choosing.height >= GUARD_MIN_ROWS and held.height > choosing.height else []


def target_parts(cfg: PipelineConfig) -> TargetParts | None:
    """The target's two parts under ``score.target_holdout`` and ``run.seed`` (None: no target)."""
    if not cfg.score.target:
        return None
    cond, held, split, fmt = _target_split(cfg)
    choosing = None
    if auto_candidates(cfg):
        share = cfg.select.proxy.share
        evaluation, choosing, second = split_table(held, share, cfg.run.seed + 1)
        if choosing.is_empty() or evaluation.is_empty():
            raise ValueError(f"select.auto grades its candidates on a share ({share}) of the held-out target rows "
                             f"and train evaluates on the rest, but {cfg.score.target} holds out "
                             f"{held.height} row(s): {second.note or 'too few to split'}; raise "
                             "score.target_holdout or add target rows")
    return TargetParts(cond, held, split, fmt, choosing)


def write_split(run, parts: TargetParts) -> Path:
    """``conditional/target-split.json``: the ids of each part (and why none is held out, if so)."""
    path = run.conditional / "target-split.json"
    text = json.dumps(asdict(parts.split), indent=1, sort_keys=True) + "\n"
    if not path.exists() or path.read_text() != text:  # rewritten only when the split changed
        atomic_write_text(path, text)
    return path


def write_held_out(path: Path, parts: TargetParts, rows: pl.DataFrame | None = None) -> Path:
    """``rows`` (default: the evaluation rows) as JSONL, written only when changed; a QA target
    stays QA (question, context, answer) so the evaluation reports exact match and F1 on it."""
    keys = ("question", "context", "answer") if parts.fmt == "qa" else ("instruction", "context", "response")
    table = parts.evaluation if rows is None else rows
    rows = [dict(zip(keys, r, strict=True)) for r in table.select("instruction", "context", "response").iter_rows()]
    text = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows)
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        atomic_write_text(path, text)
    return path
