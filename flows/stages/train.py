"""Fine-tune on the exported rows and evaluate (pipelines.finetune), with ``--train METHOD``, and
train control arms beside it (``train.compare``), so a run proves its own selection.

Arms: ``selected`` (the export), ``random-s<k>`` for k < ``train.compare_seeds`` (as many rows as
the selected arm, drawn with seed ``run.seed + k`` from the candidates the selection chose from:
instruct_selectors.control_arms), ``whole`` (every candidate) and ``general`` (as many rows of
``train.general_path``, instruction data the user already has, drawn at random). Same method,
steps, learning rate and training seed for all; all evaluate on the same rows: ``train.eval_path``, else the
target rows held out of the condition stage (flows.target_parts; ``train/target-held-out.jsonl``).
Each arm is one Prefect task (this stage's ShardMap) training into ``train/<arm>/``; its
``arm.json``, written last, holds its metrics and what it was made from, so a resumed run skips a
finished arm. The record's ``comparison`` is the table of pipelines.finetune.compare.

With ``train.control_tokens``, the selected arm trains on every row of the selection table instead
(bar dedup's drops and the export's test split), each prompt prefixed by its <|good|>/<|bad|>
label; there is no selection to compare with random then, so no control arm runs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import polars as pl

from flows.arm_training import ARM_FILE, content_key, load_arm, train_once, train_spec
from flows.config import PipelineConfig, resolve_path
from flows.publish import publish
from flows.selection_pass import chosen_steps
from flows.stages.base import ShardMap, StageContext, StageSpec, record
from flows.target_parts import target_parts, write_held_out
from pipelines.shards import read_shards, write_parquet_if_changed, write_text_if_changed


def arms(cfg: PipelineConfig) -> list[str]:
    """The arms this config trains, in order (the selected one first)."""
    if cfg.train.control_tokens:
        return ["selected"]
    out = ["selected"]
    if "random" in cfg.train.compare:
        out += [f"random-s{k}" for k in range(cfg.train.compare_seeds)]
    return out + (["whole"] if "whole" in cfg.train.compare else []) + (["general"] if cfg.train.general_path else [])


def _exported(ctx: StageContext) -> dict[str, Any]:
    exported = ctx.record("export")
    if exported is None:
        raise ValueError(f"{ctx.run.root} has no export record: run the export stage first")
    return exported


def eval_set(ctx: StageContext) -> tuple[Path, list[str]]:
    """(the file every arm evaluates on, notes): train.eval_path, else the target's held-out rows."""
    cfg = ctx.cfg
    if cfg.train.eval_path:
        return resolve_path(cfg.train.eval_path), []
    parts = target_parts(cfg)
    if parts is None:
        raise ValueError("the train stage evaluates on train.eval_path or the held-out score.target rows: set one")
    if parts.held_out.is_empty():
        return resolve_path(cfg.score.target), [f"evaluated on the whole target: {parts.split.note}"]
    return write_held_out(ctx.run.train / "target-held-out.jsonl", parts), []


def _test_ids(exported: dict[str, Any], run) -> set[str]:
    test = (exported.get("outputs") or {}).get("test_parquet")
    return set(read_shards(run.path(test))["id"]) if test else set()


def _trained_rows(path: Path) -> int:
    """Rows the selected arm trains on: the export's, bar rows it keeps with keep=false (include_dropped)."""
    scan = pl.scan_parquet(path / "*.parquet" if path.is_dir() else path)
    if "keep" in scan.collect_schema().names():
        scan = scan.filter(pl.col("keep").fill_null(True))
    return scan.select(pl.len()).collect().item()


def arm_rows(ctx: StageContext, arm: str) -> tuple[Path, dict[str, Any]]:
    """(the file arm ``arm`` trains on, extra fields for its arm.json), written when it changed."""
    from instruct_selectors.control_arms import candidates, random_pick

    cfg, run, exported = ctx.cfg, ctx.run, _exported(ctx)
    source = run.path(exported["outputs"]["parquet"])
    if arm == "selected":
        if not cfg.train.control_tokens:
            return source, {}
        from pipelines.finetune.control import write_control_rows  # conditioning: every row, labelled

        test = (exported.get("outputs") or {}).get("test_parquet")
        counts = write_control_rows(run.selected, run.control_rows, run.path(test) if test else None,
                                    **cfg.train.control_tokens.model_dump())
        return run.control_rows, {"control_rows": counts}
    if arm == "general":
        return _general_rows(ctx, _trained_rows(source))
    pool = candidates(pl.read_parquet(run.selected), chosen_steps(ctx))
    pool = pool.filter(~pl.col("id").is_in(sorted(_test_ids(exported, run)))).unique("id", maintain_order=True)
    n = _trained_rows(source)
    ids = pool["id"].to_list()
    if arm != "whole":  # random-s<k>: drawn with seed run.seed + k
        ids = random_pick(ids, n, cfg.run.seed + int(arm.removeprefix("random-s")))
    from instruct_selectors.stream_select import SELECTION_COLUMNS

    rows = pool.filter(pl.col("id").is_in(ids)).drop([c for c in SELECTION_COLUMNS if c in pool.columns])
    path = run.train_arm(arm) / "rows.parquet"
    write_parquet_if_changed(rows, path)
    return path, {"candidates": pool.height, "drawn": rows.height}


def _general_rows(ctx: StageContext, n: int) -> tuple[Path, dict[str, Any]]:
    """Arm ``general``: ``n`` rows of train.general_path drawn at random (seed run.seed); its rejects beside them."""
    from instruct_selectors.control_arms import random_pick

    from pipelines.io import read_examples

    res = read_examples(resolve_path(ctx.cfg.train.general_path))
    table = res.table.unique("id", maintain_order=True)
    rows = table.filter(pl.col("id").is_in(random_pick(table["id"].to_list(), n, ctx.cfg.run.seed)))
    path = ctx.run.train_arm("general") / "rows.parquet"
    write_parquet_if_changed(rows, path)
    return path, {"candidates": table.height, "drawn": rows.height, "rejects": len(res.rejects)}


def made_from(cfg: PipelineConfig, arm: str, source: Path, eval_path: Path) -> str:
    """What an arm's result depends on: its rows, the eval rows and the training settings (not
    ``compare`` or ``general_path``: adding an arm does not retrain the arms already trained)."""
    return content_key({"arm": arm, "train": cfg.train.model_dump(mode="json", exclude={"compare", "compare_seeds", "general_path"})},
                       cfg, source, eval_path)


def run_arm(ctx: StageContext, index: int) -> int:
    """Train arm ``index`` into train/<arm>/ unless its arm.json was made from the same inputs; its rows."""
    cfg, arm = ctx.cfg, arms(ctx.cfg)[index]
    source, extra = arm_rows(ctx, arm)
    eval_path, _ = eval_set(ctx)
    spec = train_spec(cfg, source, ctx.run.train_arm(arm), eval_path, method=cfg.train.method,
                      max_steps=cfg.train.max_steps, options=cfg.train.options, eval_before=arm == "selected")
    done = train_once(ctx, arm, made_from(cfg, arm, source, eval_path), spec, extra)
    return int(done["metrics"].get("rows") or 0)


def finish(ctx: StageContext, started: float, rows: int, plan: Any = None) -> dict[str, Any]:
    """The train record once every arm is trained: the selected arm's metrics, every arm's, the table."""
    from pipelines.finetune.compare import comparison
    from pipelines.writers.card import with_comparison

    cfg, run = ctx.cfg, ctx.run
    done = {arm: load_arm(run.train_arm(arm) / ARM_FILE) for arm in arms(cfg)}
    missing = [a for a, d in done.items() if d is None]
    if missing:
        raise ValueError(f"train arms {missing} have no {ARM_FILE}: their training did not finish")
    eval_path, notes = eval_set(ctx)
    if cfg.train.control_tokens and cfg.train.compare:
        notes.append("train.compare skipped: control_tokens trains on every row, there is no selection to compare")
    selected = done["selected"]
    arm_metrics = {a: d["metrics"] for a, d in done.items()}
    extra = {"control_rows": selected["control_rows"]} if "control_rows" in selected else {}
    table = comparison(arm_metrics)
    card = run.dataset / "README.md"
    if card.exists():  # the export wrote the card before any arm trained: the table goes on it now
        write_text_if_changed(with_comparison(card.read_text(encoding="utf-8"), table), card)
    return record(run, STAGE.name, started, method=cfg.train.method, rows_trained=rows, metrics=selected["metrics"],
                  arms=arm_metrics, comparison=table, eval={"path": str(eval_path)},
                  notes=notes, pushed=publish(ctx), **extra)


def _count(ctx: StageContext) -> int:
    return len(arms(ctx.cfg))


def _run(ctx: StageContext) -> dict[str, Any]:
    t0 = time.perf_counter()
    return finish(ctx, t0, sum(run_arm(ctx, i) for i in range(_count(ctx))))


STAGE = StageSpec(name="train", section="train", run=_run, needs=("dataset",), makes=("trained",),
                  enabled=lambda cfg: bool(cfg.train.method), folders=("train",),
                  files=lambda cfg: [p for p in (cfg.train.eval_path, cfg.score.target, cfg.train.general_path) if p],
                  per_shard=ShardMap(count=_count, run_shard=run_arm, finish=finish))
