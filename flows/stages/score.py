"""Score every examples shard into scored/ (one shard per examples shard, skipped when there).

The scores and the passes they share come from their declarations (selectors/scores/); this
stage loads the models they ask for and writes the shard. The flow maps ``run_shard`` over the
task runner; ``run`` scores every shard in this process.

A scored shard is keyed by the bytes of its examples shard (``made_from``, saved in
``counts-NNNNN.json``), not by its number: ``plan`` first moves a scored shard whose examples
moved to another number (an input file inserted before it) to that number, drops scored shards
past the last examples shard, and hands only the shards still to score to the task runner. The
record counts rows rescored and reused."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import polars as pl
from instruct_selectors.scores.base import TARGETS

from flows.config import PipelineConfig
from flows.llm_cache import get_llm, model_for
from flows.resume import content_digest
from flows.stages.base import ShardMap, ShardPlan, StageContext, StageSpec, record
from flows.usage import saved_usage, stage_usage
from pipelines.plugins import plugin_code
from pipelines.shards import atomic_write_jsonl, atomic_write_parquet, list_shards, shard_path


def _target_arrays(run, specs, made: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    arrays = {}
    for s in specs:
        if s.target is None:
            continue
        name = s.target_name
        if made.get(name) is None:
            raise ValueError(f"score {s.name!r} needs the {name.replace('_', ' ')}: run the condition stage first")
        if name != "conditional_model":
            arrays[name] = np.load(run.path(made[name]))  # records name files relative to the run
    return arrays


def target_names(specs) -> set[str]:
    """The condition stage's outputs a shard's scores read: the built-in ones and the scores' own."""
    return {*TARGETS, *(s.target_name for s in specs if s.target)}


def made_from(examples_shard: Path, conditioned: dict[str, Any], code: dict[str, str] | None = None,
              targets: Iterable[str] = TARGETS) -> str:
    """What a scored shard depends on: its examples shard's bytes (not its name: a renumbered
    shard keeps its key), what the condition stage made (its files are named by the target
    rows' fingerprint; ``targets``: the names the run's scores read) and the source of the user's
    scores (``code``: plugin_code of score.custom, so an edited score rescores every shard). The
    config is the folder's own."""
    made = sorted((k, str(v)) for k, v in conditioned.items() if k in targets)
    key = f"{content_digest(examples_shard)[:20]}:{hashlib.sha256(repr(made).encode()).hexdigest()[:12]}"
    return key + (f":{hashlib.sha256(repr(sorted(code.items())).encode()).hexdigest()[:12]}" if code else "")


def _saved_key(counts_file: Path) -> str | None:
    try:
        return json.loads(counts_file.read_text()).get("made_from")
    except (OSError, ValueError):
        return None


def score_shard(cfg: PipelineConfig, run, index: int, conditioned: dict[str, Any] | None = None) -> int:
    """Score examples shard ``index`` into scored/ (skipped when already there). Returns its rows.

    ``conditioned``: the condition stage's record (paths of what it made)."""
    from instruct_selectors.score import score_rows
    from instruct_selectors.score_notes import write_shard_counts

    specs, made = cfg.score.specs(), conditioned or {}
    target = _target_arrays(run, specs, made)
    out, source = shard_path(run.scored, index), shard_path(run.examples, index)
    key = made_from(source, made, plugin_code(cfg.score.custom), target_names(specs))
    if out.exists() and _saved_key(run.score_counts(index)) == key:
        return pl.scan_parquet(out).select(pl.len()).collect().item()
    table = pl.read_parquet(source)
    passes = {p for s in specs for p in s.passes}
    models = {"prior": get_llm(cfg.model, eager=any("attn" in s.extras for s in specs)) if passes else None}
    if any(s.target == "conditional_model" for s in specs):
        models["cond"] = get_llm(cfg.model, model=str(run.path(made["conditional_model"])), trained_from_it=True)
    with stage_usage(run, STAGE.name, index):  # saved before the shard, like the scores' rejects
        scored, rejects = score_rows(
            table, specs, models, options=cfg.score.options, target=target, llm=lambda name: model_for(cfg, name),
            seed=cfg.run.seed)
    if rejects:  # written before the shard: the shard's existence marks this index done
        atomic_write_jsonl(rejects, run.score_rejects(index))
    # The shard's counts (rows cut to max_length) and what it was made from, written before it.
    write_shard_counts(run.score_counts(index), models["prior"], table, made_from=key)
    atomic_write_parquet(scored, out)
    return scored.height


def shards(ctx: StageContext) -> int:
    return len(list_shards(ctx.run.examples))


def _shard_files(run, index: int) -> list[Path]:
    """A scored shard's files, the shard itself last (its presence marks the index done)."""
    return [run.score_counts(index), run.score_rejects(index), shard_path(run.scored, index)]


def _rows(path: Path) -> int:
    return pl.scan_parquet(path).select(pl.len()).collect().item()


def plan(ctx: StageContext) -> ShardPlan:
    """Which examples shards need scoring; scored shards of renumbered examples shards are moved
    to their new number first (two steps, through temporary names, so a cycle of moves works and a
    kill in between leaves only shards that are rescored), surplus ones deleted."""
    run, n = ctx.run, shards(ctx)
    made = ctx.record("condition") or {}
    code = plugin_code(ctx.cfg.score.custom)
    names = target_names(ctx.cfg.score.specs())
    keys = [made_from(shard_path(run.examples, i), made, code, names) for i in range(n)]
    for stray in run.scored.glob(".relink-*"):  # left by a kill during an earlier move
        stray.unlink()
    saved = {int(p.stem.split("-")[1]): _saved_key(run.score_counts(int(p.stem.split("-")[1])))
             for p in list_shards(run.scored)}
    done = {i for i in range(n) if saved.get(i) == keys[i]}
    free = {k: j for j, k in sorted(saved.items(), reverse=True) if k and j not in done}  # reusable elsewhere
    moves = {}
    for i in range(n):
        if i not in done and keys[i] in free:
            moves[i] = free.pop(keys[i])
    for i, j in moves.items():  # 1: out of the way
        for f in _shard_files(run, j):
            if f.exists():
                f.rename(f.with_name(f".relink-{i:05d}-{f.name}"))
    for i, j in moves.items():  # 2: into place (the shard itself last)
        for src, dst in zip(_shard_files(run, j), _shard_files(run, i), strict=True):
            tmp = src.with_name(f".relink-{i:05d}-{src.name}")
            dst.unlink(missing_ok=True)
            if tmp.exists():
                tmp.rename(dst)
    done |= set(moves)
    for p in list_shards(run.scored):  # past the last examples shard: would be read back as data
        index = int(p.stem.split("-")[1])
        if index >= n:
            for f in reversed(_shard_files(run, index)):
                f.unlink(missing_ok=True)
    reused = sum(_rows(shard_path(run.scored, i)) for i in done)
    todo = [i for i in range(n) if i not in done]
    return ShardPlan(todo, reused, {"shards_rescored": len(todo), "shards_reused": len(done),
                                    "shards_renumbered": len(moves), "rows_reused": reused})


def finish(ctx: StageContext, started: float, rows: int, plan: ShardPlan | None = None) -> dict[str, Any]:
    """The score stage's record, once every shard is scored (here or by mapped tasks)."""
    from instruct_selectors.score_notes import score_losses

    cfg, run = ctx.cfg, ctx.run
    extra: dict[str, Any] = {}
    specs = cfg.score.specs()
    if any(s.models for s in specs):
        rejects = sum(len(p.read_text().splitlines()) for p in run.score_rejects_files())
        extra = {"rejects": rejects}
        from flows.llm_cache import score_model

        extra["models"] = {name: score_model(cfg, name).model for s in specs for name in s.models}
    # Rows truncated to max_length, null scores and why: counted, and said in `notes` (and the report).
    extra.update(score_losses(run.score_counts_files(), list_shards(run.scored), rows))
    if plan is not None:
        info = {**plan.info, "rows_rescored": rows - plan.reused_rows}
        extra.update(info)
        extra["notes"] = [f"{info['rows_rescored']} rows rescored ({info['shards_rescored']} shards), "
                          f"{info['rows_reused']} reused ({info['shards_reused']} shards kept"
                          + (f", {info['shards_renumbered']} of them renumbered)" if info["shards_renumbered"] else ")"),
                          *extra.get("notes", [])]
    return record(run, STAGE.name, started, rows_in=rows, rows_out=rows, scores=list(cfg.score.scores),
                  usage=saved_usage(cfg, run, STAGE.name), **extra)


def run_shard(ctx: StageContext, index: int) -> int:
    return score_shard(ctx.cfg, ctx.run, index, ctx.record("condition"))


def _run(ctx: StageContext) -> dict[str, Any]:
    return STAGE.per_shard.run_all(ctx)


STAGE = StageSpec(name="score", section="score", run=_run, needs=("examples", "conditioned"), makes=("scored",),
                  retries=2, folders=("scored",), plugins=lambda cfg: {"score.custom": cfg.score.custom},
                  redo="rescored",
                  per_shard=ShardMap(count=shards, run_shard=run_shard, finish=finish, plan=plan))
