"""The pipeline's stages as plain functions: (config, run folder) -> stage record.

Each stage reads its inputs from the run folder, writes its outputs there (shard by shard,
atomically) and returns a small JSON-able record (counts in/out, rejects, seconds, outputs).
They run and test without Prefect; ``flows/build_dataset.py`` wraps each in a task.

Run folder layout::

    generate_taxonomy/  subjects, syllabi, questions, answers tables + examples/ shards + rejects
    generate_text/      examples/ shards + rejects
    examples/           every example gathered from generation and inputs (part-*.parquet)
    conditional/        CoLoR-Filter's conditional model (cached by fingerprint)
    scored/             examples with score_* columns, one shard per examples shard
    selected/           every row with keep / keep_reason columns, and summary.json
    dataset/            the export: Parquet, JSONL, HF dataset on disk, README.md card
    train/              fine-tuning output and metrics (with --train)
    stages/             these records, one JSON per stage
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Any

import polars as pl

from flows.config import ModelConfig, PipelineConfig, resolve_path
from pipelines.schema import CORE_COLUMNS, to_table
from pipelines.shards import atomic_write_parquet, atomic_write_text, read_shards, shard_path

STAGES = ("generate_taxonomy", "generate_text", "collect", "condition", "score", "select", "export", "train")


@functools.lru_cache(maxsize=4)
def _cached_llm(backend: str, model: str, base_url: str | None, batch: int, budget: int, max_length: int, eager: bool):
    from pipelines.llm import make_backend, resolve_backend_name

    name = resolve_backend_name(backend)
    if name == "hf":
        return make_backend("hf", model, eager_attention=eager, generation_batch_size=batch,
                            token_budget=budget, max_length=max_length)
    if name == "openai":
        return make_backend("openai", model, base_url=base_url)
    return make_backend(name, model)


def get_llm(cfg: ModelConfig, model: str | None = None, eager: bool = False):
    """One loaded backend per (settings, model) per process: stages and shard tasks share it."""
    return _cached_llm(cfg.backend, model or cfg.model, cfg.base_url, cfg.generation_batch_size,
                       cfg.token_budget, cfg.max_length, eager)


def _record(run_dir: Path, name: str, started: float, **fields: Any) -> dict[str, Any]:
    rec = {"stage": name, "seconds": round(time.perf_counter() - started, 2), **fields}
    atomic_write_text(run_dir / "stages" / f"{name}.json", json.dumps(rec, indent=2, sort_keys=True, default=str))
    return rec


def load_record(run_dir: Path, name: str) -> dict[str, Any] | None:
    path = run_dir / "stages" / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def generate_taxonomy(cfg: PipelineConfig, run_dir: Path) -> dict[str, Any]:
    from generators.glan import run_glan

    t0 = time.perf_counter()
    c = cfg.generate.taxonomy
    counts = run_glan(
        resolve_path(c.path), run_dir / "generate_taxonomy", get_llm(cfg.model),
        subjects_per_discipline=c.subjects_per_discipline, sessions=c.sessions_per_syllabus,
        questions_per_syllabus=c.questions_per_syllabus, seed=cfg.run.seed,
        max_disciplines=c.max_disciplines, max_tokens=c.max_tokens, shard_size=cfg.run.shard_size,
    )
    return _record(run_dir, "generate_taxonomy", t0, counts=counts,
                   rows_out=counts.get("examples", 0), rejects=counts.get("rejects", 0))


def generate_text(cfg: PipelineConfig, run_dir: Path) -> dict[str, Any]:
    from generators.bonito import run_bonito

    t0 = time.perf_counter()
    c = cfg.generate.text
    counts = run_bonito(
        resolve_path(c.path), run_dir / "generate_text", get_llm(cfg.model),
        task_types=tuple(c.task_types), samples_per_passage=c.samples_per_passage, mode=c.mode,
        seed=cfg.run.seed, max_passages=c.max_passages, max_tokens=c.max_tokens, shard_size=cfg.run.shard_size,
    )
    return _record(run_dir, "generate_text", t0, counts=counts,
                   rows_out=counts.get("examples", 0), rejects=counts.get("rejects", 0))


def collect(cfg: PipelineConfig, run_dir: Path) -> dict[str, Any]:
    """Gather generated examples and input datasets into examples/ shards (input order kept)."""
    from pipelines.io import read_examples

    t0 = time.perf_counter()
    tables, per_source, rejects = [], {}, 0
    for stage in ("generate_taxonomy", "generate_text"):
        folder = run_dir / stage / "examples"
        if any(folder.glob("part-*.parquet")):
            t = read_shards(folder).select(CORE_COLUMNS)
            tables.append(t)
            per_source[stage] = t.height
    for path in cfg.generate.inputs:
        res = read_examples(resolve_path(path))
        tables.append(res.table.select(CORE_COLUMNS))
        per_source[str(path)] = res.table.height
        rejects += len(res.rejects)
        if res.rejects:
            from pipelines.shards import atomic_write_jsonl

            atomic_write_jsonl(res.rejects, run_dir / "examples" / f"rejects-{Path(path).name}.jsonl")
    table = pl.concat(tables, how="vertical") if tables else to_table([])
    if table.height == 0:
        raise RuntimeError("no examples to score: generation produced none and no --input was given")
    out = run_dir / "examples"
    size = cfg.run.shard_size
    n_shards = 0
    for n_shards, start in enumerate(range(0, table.height, size), start=1):
        atomic_write_parquet(table.slice(start, size), shard_path(out, n_shards - 1))
    return _record(run_dir, "collect", t0, rows_in=table.height + rejects, rows_out=table.height,
                   rejects=rejects, per_source=per_source, shards=n_shards)


def condition(cfg: PipelineConfig, run_dir: Path) -> dict[str, Any]:
    """Build (or reuse) CoLoR-Filter's conditional model: the prior fine-tuned on the target set."""
    from instruct_selectors.color_filter import build_conditional

    from pipelines.io import read_examples

    t0 = time.perf_counter()
    target = read_examples(resolve_path(cfg.score.target)).table
    path = build_conditional(
        cfg.model.model, target, run_dir / "conditional", method=cfg.score.conditional_method,
        epochs=cfg.score.conditional_epochs, seed=cfg.run.seed, max_length=cfg.model.max_length,
    )
    return _record(run_dir, "condition", t0, rows_in=target.height, conditional_model=str(path))


def score_shard(cfg: PipelineConfig, run_dir: Path, index: int) -> int:
    """Score examples shard ``index`` into scored/ (skipped when already there). Returns its rows."""
    from instruct_selectors.score import score_table

    out = shard_path(run_dir / "scored", index)
    if out.exists():
        return pl.read_parquet(out).height
    table = pl.read_parquet(shard_path(run_dir / "examples", index))
    scores = tuple(cfg.score.scores)
    cond = None
    if "color" in scores:
        rec = load_record(run_dir, "condition")
        cond = get_llm(cfg.model, model=rec["conditional_model"])
    prior = get_llm(cfg.model, eager="ctx_attn" in scores)
    scored = score_table(table, prior, scores=scores, cond_llm=cond, attn_layer=cfg.score.attn_layer,
                         color_reduction=cfg.score.color_reduction)
    atomic_write_parquet(scored, out)
    return scored.height


def examples_shards(run_dir: Path) -> list[int]:
    return list(range(len(list((run_dir / "examples").glob("part-*.parquet")))))


def score(cfg: PipelineConfig, run_dir: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    rows = sum(score_shard(cfg, run_dir, i) for i in examples_shards(run_dir))
    return score_record(cfg, run_dir, t0, rows)


def score_record(cfg: PipelineConfig, run_dir: Path, started: float, rows: int) -> dict[str, Any]:
    return _record(run_dir, "score", started, rows_in=rows, rows_out=rows, scores=list(cfg.score.scores))


def select(cfg: PipelineConfig, run_dir: Path) -> dict[str, Any]:
    from instruct_selectors.context_dependency import tag_context_dependent
    from instruct_selectors.policies import select as apply_steps

    t0 = time.perf_counter()
    table = read_shards(run_dir / "scored")
    column = next((c for c in ("score_ctx_attn", "score_ctx_loss") if c in table.columns), None)
    if column:
        table = tag_context_dependent(table, column, threshold=cfg.score.ctx_threshold, quantile=cfg.score.ctx_quantile)
    selected, summary = apply_steps(table, cfg.select.steps)
    atomic_write_parquet(selected, run_dir / "selected" / "all.parquet")
    atomic_write_text(run_dir / "selected" / "summary.json", summary.write_json())
    kept = int(selected["keep"].sum())
    return _record(run_dir, "select", t0, rows_in=table.height, rows_out=kept,
                   steps=summary.to_dicts())


def export(cfg: PipelineConfig, run_dir: Path, stages: list[dict[str, Any]]) -> dict[str, Any]:
    from pipelines.export import export_dataset, push_to_hub

    t0 = time.perf_counter()
    selected = pl.read_parquet(run_dir / "selected" / "all.parquet")
    table = selected if cfg.export.include_dropped else selected.filter(pl.col("keep"))
    card_info = {
        "config": cfg.model_dump(mode="json"),
        "models": {"generator_and_prior": cfg.model.model, "backend": cfg.model.backend},
        "stages": stages,
        "fingerprint": cfg.fingerprint(),
    }
    paths = export_dataset(table, run_dir / "dataset", card_info=card_info)
    pushed = None
    if cfg.export.push_to_hub:
        pushed = push_to_hub(run_dir / "dataset", cfg.export.push_to_hub, private=cfg.export.private)
    return _record(run_dir, "export", t0, rows_in=selected.height, rows_out=table.height,
                   outputs={k: str(v) for k, v in paths.items()}, pushed=pushed)


def train(cfg: PipelineConfig, run_dir: Path) -> dict[str, Any]:
    from pipelines.finetune import run_training

    t0 = time.perf_counter()
    method = cfg.train.method
    options = dict(cfg.train.options)
    if method == "rslora":
        method, options["rslora"] = "lora", True
    metrics = run_training(
        run_dir / "dataset" / "parquet", run_dir / "train", method=method, model=cfg.model.model,
        eval_path=resolve_path(cfg.train.eval_path or cfg.score.target), max_steps=cfg.train.max_steps,
        seed=cfg.run.seed, options=options, conditional_indicator=cfg.train.conditional_indicator,
        eval_before=True, max_length=cfg.model.max_length,
    )
    return _record(run_dir, "train", t0, method=cfg.train.method, metrics=metrics)
