"""Select over the scored shards in two passes (instruct_selectors.stream_select): memory holds
per-row state only (ids, the columns the steps read, dedup hashes), not the texts. Decontamination
marks and the user's row filters (select.custom) are applied to each shard as it is read. The
target rows held out of the condition stage (flows.target_parts) join the decontamination eval
sets by themselves: train evaluates on them, so no pool row may quote one."""

from __future__ import annotations

import time
from typing import Any

from flows.config import PipelineConfig, resolve_path
from flows.selection_pass import chosen_steps, decontamination_files, selection
from flows.stages.base import StageContext, StageSpec, record
from pipelines.shards import atomic_write_text


def _check(cfg: PipelineConfig) -> dict[str, int]:
    from instruct_selectors.row_filters import load_filters

    from pipelines.io import check_input

    load_filters(cfg.select.custom)  # a bad import path fails before any model loads
    io = cfg.io
    return {path: check_input(resolve_path(path), io.check_rows, strict_encoding=io.strict_encoding,
                              max_line_bytes=io.max_line_bytes).table.height
            for path in cfg.select.decontaminate.against}


def _run(ctx: StageContext) -> dict[str, Any]:
    run, t0 = ctx.run, time.perf_counter()
    summary, compact, extra = selection(ctx, chosen_steps(ctx), run.selected)
    atomic_write_text(run.selection_summary, summary.write_json())
    kept = int(compact["keep"].sum())
    return record(run, STAGE.name, t0, rows_in=compact.height, rows_out=kept, steps=summary.to_dicts(), **extra)


STAGE = StageSpec(name="select", section="select", run=_run, needs=("scored", "choice"), makes=("selected",),
                  check=_check, files=decontamination_files, folders=("selected",),
                  plugins=lambda cfg: {"select.custom": cfg.select.custom}, redo="reselected")
