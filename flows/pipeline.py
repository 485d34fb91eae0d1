"""The pipeline: every stage in order, one list that the Prefect flow, ``python -m flows.stages``,
the input checks, the crash test and the card's lineage all iterate.

    for stage in stages_for(cfg): ...              # the enabled ones, in order
    run_stage("select", run, cfg)                  # one stage on a run folder, upstream from its records

The order is checked when this module loads: every output a stage needs is made by a stage
before it (``check_order``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flows.config import PipelineConfig
from flows.run_folder import RunFolder
from flows.stages import (
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


def run_stage(name: str, run: RunFolder, cfg: PipelineConfig) -> dict[str, Any]:
    """Run one stage on an existing run folder, taking upstream values from its stage records."""
    if name not in BY_NAME:
        raise ValueError(f"unknown stage {name!r}: choose from {STAGE_NAMES}")
    records = {r["stage"]: r for r in run.records(STAGE_NAMES)}
    return BY_NAME[name].run(StageContext(cfg, run, records))
