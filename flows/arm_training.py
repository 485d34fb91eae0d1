"""Training one arm (a row set) into its folder, once: what the train stage's arms and the choose
stage's proxy fine-tunes share. An arm's ``arm.json``, written last, holds its metrics and the key of
what it was made from (its rows, the eval rows, the settings), so a resumed run skips it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from flows.config import PipelineConfig
from flows.resume import file_digest
from flows.stages.base import StageContext
from pipelines.shards import atomic_write_text

ARM_FILE = "arm.json"


def content_key(settings: dict[str, Any], cfg: PipelineConfig, source: Path, eval_path: Path) -> str:
    """A short hash of ``settings``, the model, the rows trained on and the rows evaluated on."""
    settings = {**settings, "model": cfg.model.model, "max_length": cfg.model.max_length, "seed": cfg.run.seed,
                "refusal": cfg.transform.refusal_aware.model_dump(mode="json"),
                "rows": file_digest(source) if source.exists() else None, "eval": file_digest(eval_path)}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def load_arm(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def train_spec(cfg: PipelineConfig, source: Path, out: Path, eval_path: Path, *, method: str, max_steps: int | None,
               options: dict[str, Any], eval_before: bool, **sizes: int) -> dict[str, Any]:
    """The plain arguments of flows.train_process.train for one arm; ``sizes``: batch_size, max_length."""
    refusal = cfg.transform.refusal_aware
    return {"source": str(source), "out": str(out), "method": method, "options": options,
            "model": cfg.model.model, "eval_path": str(eval_path), "max_steps": max_steps,
            "seed": cfg.run.seed, "conditional_indicator": cfg.train.conditional_indicator,
            "control_tokens": bool(cfg.train.control_tokens), "eval_before": eval_before,
            "max_length": cfg.model.max_length, "threads": cfg.model.threads, **sizes,
            "refusal": refusal.model_dump(include={"metric", "threshold"}) if refusal.enabled else None}


def train_once(ctx: StageContext, arm: str, key: str, spec: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Train ``spec`` into its ``out`` folder unless its arm.json was made from ``key``; the arm.json."""
    from flows.train_process import train, train_in_fresh_process

    out = Path(spec["out"])
    done = load_arm(out / ARM_FILE)
    if done is not None and done.get("made_from") == key:
        return done
    if ctx.cfg.train.fresh_process:
        metrics = train_in_fresh_process(spec, out)
    else:
        from flows.llm_cache import release_all

        release_all()  # the generators' and scorers' models: the trainer loads its own copy
        metrics = train(spec)
    done = {"arm": arm, "made_from": key, "metrics": ctx.run.relative(metrics), **extra}
    atomic_write_text(out / ARM_FILE, json.dumps(done, indent=1, sort_keys=True, default=str) + "\n")
    return done
