"""The pipeline: every stage in order, one list that the Prefect flow, ``python -m flows.stages``,
the input checks, the crash test and the card's lineage all iterate.

    for stage in stages_for(cfg): ...              # the enabled ones, in order
    run_stage("select", run, cfg)                  # one stage on a run folder, upstream from its records

The order is checked when this module loads: every output a stage needs is made by a stage
before it (``check_order``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from flows.config import PipelineConfig
from flows.resume import input_key, keyed, plugin_keys, plugin_notes
from flows.run_folder import RunFolder
from flows.stages import (
    choose,
    collect,
    condition,
    export,
    generate_custom,
    generate_taxonomy,
    generate_text,
    refusal_aware,
    report,
    score,
    select,
    train,
)
from flows.stages.base import StageContext, StageSpec

PIPELINE: tuple[StageSpec, ...] = (
    generate_taxonomy.STAGE,
    generate_text.STAGE,
    generate_custom.STAGE,
    collect.STAGE,
    condition.STAGE,
    score.STAGE,
    choose.STAGE,
    select.STAGE,
    refusal_aware.STAGE,
    export.STAGE,
    train.STAGE,
    report.STAGE,
)
STAGE_NAMES = tuple(s.name for s in PIPELINE)
BY_NAME = {s.name: s for s in PIPELINE}


def check_order(pipeline: Sequence[StageSpec]) -> None:
    """Every need is made by an earlier stage; raises naming the stage and the output."""
    made: set[str] = set()
    for stage in pipeline:
        missing = [n for n in stage.needs if n not in made]
        if missing:
            makers = {m: [s.name for s in pipeline if m in s.makes] for m in missing}
            raise ValueError(f"stage {stage.name!r} needs {missing}, made by {makers} after it (or by none)")
        made.update(stage.makes)


check_order(PIPELINE)


def stages_for(cfg: PipelineConfig) -> list[StageSpec]:
    """The stages this config runs, in order."""
    return [s for s in PIPELINE if s.enabled(cfg)]


def check_inputs(cfg: PipelineConfig) -> dict[str, int]:
    """Read every input file the run will use, before any model loads: a bad taxonomy, passage
    file, input dataset or target set fails here in seconds, naming the file (and line, field).
    Returns rows per input; bad rows inside a file are not errors (the stages keep them as rejects)."""
    counts: dict[str, int] = {}
    for stage in stages_for(cfg):
        counts.update(stage.check(cfg))
    return counts


def upstream(name: str, records: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The records of the stages before ``name``, in pipeline order."""
    before = STAGE_NAMES[:STAGE_NAMES.index(name)]
    return {s: records[s] for s in before if s in records}


def run_keyed(name: str, ctx: StageContext, force: bool = False,
              map_shards: Callable[[StageContext, list[int]], int] | None = None) -> dict[str, Any]:
    """Run stage ``name`` unless its saved record was made from the same content (flows.resume).

    A stage whose inputs changed starts from a clean slate where its own resume could keep stale
    files (the stage's ``reset``); shards inside a stage are keyed by their own content."""
    stage, records = BY_NAME[name], upstream(name, dict(ctx.records))
    ctx = StageContext(ctx.cfg, ctx.run, records)
    # Keyed on the stages that make what it needs (their keys carry theirs), not on every stage before.
    code = plugin_keys(stage.plugins(ctx.cfg))
    key = input_key(ctx.cfg, name, stage.files(ctx.cfg),
                    [r for s, r in records.items() if set(BY_NAME[s].makes) & set(stage.needs)], code)
    old = ctx.run.load_record(name)
    if old is not None and old.get("input_key") == key and not force:
        return old
    if old is not None and old.get("input_key") not in (None, key) and stage.reset is not None:
        stage.reset(ctx.run)
    if stage.per_shard is not None:
        rec = stage.per_shard.run_all(ctx, map_shards)
    else:
        rec = stage.run(ctx)
    if code:  # the plugins' digests, so the next run can say which edit made it rerun
        why = plugin_notes(stage.redo, (old or {}).get("plugin_code"), code)
        rec = {**rec, "plugin_code": code, **({"notes": [*why, *rec.get("notes", [])]} if why else {})}
    return keyed(ctx.run, rec, key, stage.folders)


def run_stage(name: str, run: RunFolder, cfg: PipelineConfig) -> dict[str, Any]:
    """Run one stage on an existing run folder, taking upstream values from its stage records
    (by hand: it runs even when nothing changed; finished shards are still skipped)."""
    if name not in BY_NAME:
        raise ValueError(f"unknown stage {name!r}: choose from {STAGE_NAMES}")
    records = {r["stage"]: r for r in run.records(STAGE_NAMES)}
    return run_keyed(name, StageContext(cfg, run, records), force=True)
