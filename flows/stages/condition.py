"""What the target set gives the scores, each built once and reused: CoLoR-Filter's conditional
model (the prior fine-tuned on the target rows), target_sim's target embedding and otd's target
rows (one embedding per target row, from the same pass), and the arrays a user's score declares as
its own ``Target``. Runs when a score declares a ``target``.

Only the conditioning part of the target reaches them: ``score.target_holdout`` of its rows are
held out (flows.target_parts) for the train stage to evaluate on; their ids are in
``conditional/target-split.json``."""

from __future__ import annotations

import io
import time
from typing import Any

import polars as pl

from flows.config import PipelineConfig, resolve_path
from flows.llm_cache import get_llm
from flows.stages.base import StageContext, StageSpec, record
from flows.target_parts import target_parts, write_split
from flows.usage import saved_usage, stage_usage
from pipelines.shards import atomic_write_bytes


def target_file(cfg: PipelineConfig) -> list[str]:
    """The user file this stage reads (its bytes key the stage): the target set."""
    return [cfg.score.target] if cfg.score.target else []


def targets_needed(cfg: PipelineConfig) -> set[str]:
    """What the run's scores need from the target set (Score.target), by name."""
    return {s.target_name for s in cfg.score.specs() if s.target}


def _check(cfg: PipelineConfig) -> dict[str, int]:
    from pipelines.io import NoRowsError, check_input

    try:
        target = check_input(resolve_path(cfg.score.target), cfg.io.check_rows, strict_encoding=cfg.io.strict_encoding,
                             max_line_bytes=cfg.io.max_line_bytes).table
    except NoRowsError as e:
        raise ValueError(f"{cfg.score.target}: the target set has no usable rows ({e})") from None
    return {cfg.score.target: target.height}


def _run(ctx: StageContext) -> dict[str, Any]:
    from instruct_selectors.color_filter import build_conditional, fingerprint

    cfg, run, t0 = ctx.cfg, ctx.run, time.perf_counter()
    parts = target_parts(cfg)
    target, split = parts.conditioning, parts.split
    needed, made = targets_needed(cfg), {}
    if "conditional_model" in needed:
        made["conditional_model"] = str(build_conditional(
            cfg.model.model, target, run.conditional, method=cfg.score.conditional_method,
            epochs=cfg.score.conditional_epochs, seed=cfg.run.seed, max_length=cfg.model.max_length,
        ))
    for pooling, wanted in _poolings(cfg, needed).items():  # one pass per pooling the scores ask for
        key = fingerprint(cfg.model.model, target, {"pooling": pooling, "with_context": cfg.score.target_context,
                                                    "max_length": cfg.model.max_length})
        made |= _target_embeddings(cfg, ctx, target, key, wanted, pooling)
    made |= _own_targets(cfg, ctx, target)
    held = {"conditioning": len(split.conditioning), "held_out": len(split.held_out),
            "file": str(write_split(run, parts))}
    return record(run, STAGE.name, t0, rows_in=target.height + parts.held_out.height, rows_out=target.height,
                  target_split=held, notes=[split.note] if split.note else [],
                  usage=saved_usage(cfg, run, STAGE.name), **made)


def _poolings(cfg: PipelineConfig, needed: set[str]) -> dict[str, set[str]]:
    """pooling -> the target arrays made with it: target_sim's vector and otd's matrix each pool the
    target rows as their score's ``pooling`` option says (score.options.target_sim / .otd)."""
    out: dict[str, set[str]] = {}
    for array, score in (("target_embedding", "target_sim"), ("target_matrix", "otd")):
        if array in needed:
            out.setdefault(cfg.score.options_for(score).pooling, set()).add(array)
    return out


def _target_embeddings(cfg: PipelineConfig, ctx: StageContext, target: pl.DataFrame, key: str,
                       needed: set[str], pooling: str) -> dict[str, str]:
    """target_sim's mean vector and otd's matrix of the target rows, from one pass, each cached by ``key``."""
    from instruct_selectors.target_sim import target_rows, target_vector

    run = ctx.run
    paths = {"target_embedding": run.target_embedding(key), "target_matrix": run.target_matrix(key)}
    paths = {k: p for k, p in paths.items() if k in needed}
    if not all(p.exists() for p in paths.values()):
        with stage_usage(run, STAGE.name):
            rows = target_rows(get_llm(cfg.model), target, pooling, cfg.score.target_context)
        arrays = {"target_embedding": target_vector(rows), "target_matrix": rows}
        for name, path in paths.items():
            if not path.exists():
                _save_array(path, arrays[name])
    return {name: str(p) for name, p in paths.items()}


def _save_array(path, array) -> None:
    """``array`` as a .npy file, written atomically (a killed run never leaves half of one)."""
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, array)
    atomic_write_bytes(path, buf.getvalue())


def _own_targets(cfg: PipelineConfig, ctx: StageContext, target: pl.DataFrame) -> dict[str, str]:
    """The arrays plugin scores declare as their ``Target``, each built once and cached by the target
    rows, the model, the score's options and its code (an edited build rebuilds)."""
    import numpy as np
    from instruct_selectors.color_filter import fingerprint
    from instruct_selectors.scores.base import Target, TargetInputs

    from pipelines.plugins import plugin_code

    made = {}
    code = plugin_code(cfg.score.custom)  # a build may sit in any module of the user's package
    for score in cfg.score.specs():
        own = score.target
        if not isinstance(own, Target) or own.name in made:
            continue
        options = score.parse_options(cfg.score.options.get(score.name))
        key = fingerprint(cfg.model.model, target, {"target": own.name, "code": code, "max_length": cfg.model.max_length,
                                                    "options": options.model_dump(mode="json") if options else None})
        path = ctx.run.conditional / f"target-{own.name}-{key}.npy"
        if not path.exists():
            with stage_usage(ctx.run, STAGE.name):
                array = np.asarray(own.build(TargetInputs(target, options, lambda: get_llm(cfg.model), cfg.run.seed)))
            _save_array(path, array)
        made[own.name] = str(path.relative_to(ctx.run.root))
    return made


STAGE = StageSpec(name="condition", section="score.target", run=_run, makes=("conditioned",),
                  enabled=lambda cfg: bool(targets_needed(cfg)), check=_check,
                  files=target_file, folders=("conditional",))
