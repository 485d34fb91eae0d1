"""The run report: report.md and the score histograms, from the stage records and the selection."""

from __future__ import annotations

import time
from typing import Any

from flows.stages.base import StageContext, StageSpec, record
from flows.verdict import choice_section, selection_verdict

VIEW_LINE = ("Every row that entered selection, kept or dropped and why, and every reject: "
             "`python -m flows.view <this run folder>` serves them in your browser (flows/view.py).\n")


def _run(ctx: StageContext) -> dict[str, Any]:
    from pipelines.report import read_report_table, write_run_report

    folder, name = ctx.run.report_paths()
    t0 = time.perf_counter()
    records = [r for r in ctx.records.values() if r.get("stage") != STAGE.name]
    paths = write_run_report(folder, records, read_report_table(ctx.run.selected), out_name=name,
                             lead=[*selection_verdict(records), *choice_section(records), VIEW_LINE])
    return record(ctx.run, STAGE.name, t0, outputs={k: str(v) for k, v in paths.items()})


STAGE = StageSpec(name="report", section="run", run=_run, needs=("selected", "dataset", "trained"),
                  makes=("report",))
