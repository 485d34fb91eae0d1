"""Fine-tune on the exported rows and evaluate (pipelines.finetune), with ``--train METHOD``.

With ``train.control_tokens``, on every row of the selection table instead (bar dedup's drops
and the export's test split), each prompt prefixed by its <|good|>/<|bad|> label."""

from __future__ import annotations

import time
from typing import Any

from flows.config import resolve_path
from flows.stages.base import StageContext, StageSpec, record


def _run(ctx: StageContext) -> dict[str, Any]:
    from flows.llm_cache import release_all
    from generators.refusal_certainty import refusal_eval
    from pipelines.finetune import run_training
    from pipelines.finetune.methods import resolve_method

    cfg, run, t0 = ctx.cfg, ctx.run, time.perf_counter()
    release_all()  # the generators' and scorers' models: the trainer loads its own copy
    exported = ctx.record("export")
    if exported is None:
        raise ValueError(f"{run.root} has no export record: run the export stage first")
    method, options = resolve_method(cfg.train.method, cfg.train.options)
    source, control = run.path(exported["outputs"]["parquet"]), {}
    if cfg.train.control_tokens:  # conditioning instead of selection: every selected row, labelled
        from pipelines.finetune.control import write_control_rows

        test_split = (exported.get("outputs") or {}).get("test_parquet")
        test_split = run.path(test_split) if test_split else None
        control = {"control_rows": write_control_rows(run.selected, run.control_rows, test_split,
                                                      **cfg.train.control_tokens.model_dump())}
        source = run.control_rows
    metrics = run_training(
        source, run.train, method=method, model=cfg.model.model,
        eval_path=resolve_path(cfg.train.eval_path or cfg.score.target), max_steps=cfg.train.max_steps,
        seed=cfg.run.seed, options=options, conditional_indicator=cfg.train.conditional_indicator,
        control_tokens=bool(cfg.train.control_tokens), eval_before=True, max_length=cfg.model.max_length,
        extra_eval=refusal_eval(**cfg.transform.refusal_aware.model_dump(include={"metric", "threshold"}))
        if cfg.transform.refusal_aware.enabled else None,
    )
    return record(run, STAGE.name, t0, method=cfg.train.method, metrics=metrics, **control)


STAGE = StageSpec(name="train", section="train", run=_run, needs=("dataset",), makes=("trained",),
                  enabled=lambda cfg: bool(cfg.train.method))
