"""The run report: report.md and the score histograms, from the stage records and the selection."""

from __future__ import annotations

from typing import Any

from flows.stages.base import StageContext, StageSpec


def _run(ctx: StageContext) -> dict[str, Any]:
    from pipelines.report import read_report_table, write_run_report

    folder, name = ctx.run.report_paths()
    records = [r for r in ctx.records.values() if r.get("stage") != STAGE.name]
    paths = write_run_report(folder, records, read_report_table(ctx.run.selected), out_name=name)
    return {"stage": STAGE.name, "outputs": {k: str(v) for k, v in paths.items()}}  # not a record: it reports them


STAGE = StageSpec(name="report", section="run", run=_run, needs=("selected", "dataset", "trained"),
                  makes=("report",))
