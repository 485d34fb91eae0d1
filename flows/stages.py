"""The pipeline's stages as plain functions: (config, run folder, upstream values) -> stage record.

Each stage reads its inputs from the run folder, writes its outputs there (shard by shard,
atomically) and returns a small JSON-able record (counts in/out, rejects, seconds, outputs), also
saved as ``stages/<stage>.json``. They run and test without Prefect; ``flows/build_dataset.py``
wraps each in a task. Paths come from :class:`flows.run_folder.RunFolder` only.

Rerun one stage by hand on an existing run folder (its saved config is used):

    python -m flows.stages score runs/run-1a2b3c
    python -m flows.stages select runs/run-1a2b3c
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path
from typing import Any

import polars as pl
from instruct_selectors.score import SCORE_COLUMNS, SCORE_DEFINITIONS

from flows.config import ModelConfig, PipelineConfig, resolve_path
from flows.run_folder import GENERATORS, RunFolder
from flows.usage import saved_usage, stage_usage, usage_field
from pipelines.schema import CORE_COLUMNS
from pipelines.shards import (
    atomic_write_bytes,
    atomic_write_jsonl,
    atomic_write_parquet,
    list_shards,
    read_shards,
    read_short_columns,
    shard_path,
)

STAGES = ("generate_taxonomy", "generate_text", "collect", "condition", "score", "select", "refusal_aware",
          "export", "train")


@functools.lru_cache(maxsize=4)
def _cached_llm(backend: str, model: str, base_url: str | None, batch: int, budget: int, max_length: int,
                eager: bool, engine: str):
    from pipelines.llm import make_backend, resolve_backend_name

    name = resolve_backend_name(backend)
    if name == "hf":
        return make_backend("hf", model, eager_attention=eager, generation_batch_size=batch,
                            token_budget=budget, max_length=max_length, generation_engine=engine)
    if name == "openai":
        return make_backend("openai", model, base_url=base_url)
    return make_backend(name, model)


def get_llm(cfg: ModelConfig, model: str | None = None, eager: bool = False):
    """One loaded backend per (settings, model) per process: stages and shard tasks share it."""
    if cfg.threads:
        import torch

        # Set on purpose: torch's default (every core) spins in OpenMP barriers when the
        # machine is shared with another job or with other Dask workers.
        torch.set_num_threads(cfg.threads)
    return _cached_llm(cfg.backend, model or cfg.model, cfg.base_url, cfg.generation_batch_size,
                       cfg.token_budget, cfg.max_length, eager, cfg.generation_engine)


def check_inputs(cfg: PipelineConfig) -> dict[str, int]:
    """Read every input file the run will use, before any model loads: a bad taxonomy, passage
    file, input dataset or target set fails here in seconds, naming the file (and line, field).
    Returns rows per input; bad rows inside a file are not errors (the stages keep them as rejects)."""
    from pipelines.io import read_examples, read_passages

    counts: dict[str, int] = {}
    strict = cfg.io.strict_encoding
    if cfg.generate.taxonomy.enabled:
        from generators.taxonomy import load_taxonomy

        counts[cfg.generate.taxonomy.path] = len(load_taxonomy(resolve_path(cfg.generate.taxonomy.path)))
    if cfg.generate.text.enabled:
        text_path = resolve_path(cfg.generate.text.path)
        counts[cfg.generate.text.path] = read_passages(text_path, strict_encoding=strict).table.height
    for path in cfg.generate.inputs:
        counts[path] = read_examples(resolve_path(path), strict_encoding=strict).table.height
    for path in cfg.select.decontaminate.against:
        counts[path] = read_examples(resolve_path(path), strict_encoding=strict).table.height
    if set(cfg.score.scores) & set(TARGET_SCORES):
        target = read_examples(resolve_path(cfg.score.target), strict_encoding=strict).table
        if target.is_empty():
            raise ValueError(f"{cfg.score.target}: the target set has no usable rows")
        counts[cfg.score.target] = target.height
    return counts


def _record(run: RunFolder, name: str, started: float, **fields: Any) -> dict[str, Any]:
    return run.write_record({"stage": name, "seconds": round(time.perf_counter() - started, 2), **fields})


def generate_taxonomy(cfg: PipelineConfig, run: RunFolder) -> dict[str, Any]:
    from generators.glan import run_glan

    t0 = time.perf_counter()
    c = cfg.generate.taxonomy
    with stage_usage(run, "generate_taxonomy") as used:
        counts = run_glan(
            resolve_path(c.path), run.generator("generate_taxonomy"), get_llm(cfg.model),
            subjects_per_discipline=c.subjects_per_discipline, sessions=c.sessions_per_syllabus,
            questions_per_syllabus=c.questions_per_syllabus, seed=cfg.run.seed,
            max_disciplines=c.max_disciplines, max_tokens=c.max_tokens, shard_size=cfg.run.shard_size,
        )
        return _record(run, "generate_taxonomy", t0, counts=counts, usage=usage_field(cfg, used),
                       rows_out=counts.get("examples", 0), rejects=counts.get("rejects", 0))


def generate_text(cfg: PipelineConfig, run: RunFolder) -> dict[str, Any]:
    from generators.bonito import run_bonito

    t0 = time.perf_counter()
    c = cfg.generate.text
    with stage_usage(run, "generate_text") as used:
        counts = run_bonito(
            resolve_path(c.path), run.generator("generate_text"), get_llm(cfg.model),
            task_types=tuple(c.task_types), samples_per_passage=c.samples_per_passage, mode=c.mode,
            seed=cfg.run.seed, max_passages=c.max_passages, max_tokens=c.max_tokens, shard_size=cfg.run.shard_size,
        )
        return _record(run, "generate_text", t0, counts=counts, usage=usage_field(cfg, used),
                       rows_out=counts.get("examples", 0), rejects=counts.get("rejects", 0))


def collect(cfg: PipelineConfig, run: RunFolder) -> dict[str, Any]:
    """Gather generated examples and input datasets into examples/ shards (input order kept).

    Streams: inputs are read in chunks (pipelines.stream_io) and shards written as they fill."""
    from pipelines.stream_io import ShardWriter, iter_examples

    t0 = time.perf_counter()
    per_source, rejects = {}, 0
    out = ShardWriter(run.examples, cfg.run.shard_size)
    for stage in GENERATORS:
        for shard in list_shards(run.generated_examples(stage)):
            t = pl.read_parquet(shard).select(CORE_COLUMNS)
            out.add(t)
            per_source[stage] = per_source.get(stage, 0) + t.height
    for path in cfg.generate.inputs:
        bad: list[dict[str, Any]] = []
        per_source[str(path)] = 0
        for part in iter_examples(resolve_path(path), strict_encoding=cfg.io.strict_encoding,
                                  chunk_rows=10_000):
            out.add(part.table.select(CORE_COLUMNS))
            per_source[str(path)] += part.table.height
            bad += part.rejects
        rejects += len(bad)
        if bad:
            atomic_write_jsonl(bad, run.input_rejects(path))
    if out.rows == 0:
        raise ValueError("no examples to score: generation produced none and no --input was given")
    n_shards = out.close()
    return _record(run, "collect", t0, rows_in=out.rows + rejects, rows_out=out.rows,
                   rejects=rejects, per_source=per_source, shards=n_shards)


TARGET_SCORES = ("color", "target_sim", "otd")  # the scores that need the condition stage


def condition(cfg: PipelineConfig, run: RunFolder) -> dict[str, Any]:
    """What the target set gives the scores: CoLoR-Filter's conditional model (the prior fine-tuned
    on the target rows), target_sim's target embedding and otd's target rows (one embedding per
    target row, from the same pass), each built once and reused."""
    from instruct_selectors.color_filter import build_conditional, fingerprint

    from pipelines.io import read_examples

    t0 = time.perf_counter()
    target = read_examples(resolve_path(cfg.score.target), strict_encoding=cfg.io.strict_encoding).table
    made: dict[str, str] = {}
    if "color" in cfg.score.scores:
        made["conditional_model"] = str(build_conditional(
            cfg.model.model, target, run.conditional, method=cfg.score.conditional_method,
            epochs=cfg.score.conditional_epochs, seed=cfg.run.seed, max_length=cfg.model.max_length,
        ))
    if {"target_sim", "otd"} & set(cfg.score.scores):
        key = fingerprint(cfg.model.model, target, {"pooling": cfg.score.target_pooling,
                                                    "max_length": cfg.model.max_length})
        made |= _target_embeddings(cfg, run, target, key)
    return _record(run, "condition", t0, rows_in=target.height, usage=saved_usage(cfg, run, "condition"), **made)


def _target_embeddings(cfg: PipelineConfig, run: RunFolder, target: pl.DataFrame, key: str) -> dict[str, str]:
    """target_sim's mean vector and otd's matrix of the target rows, from one pass, each cached by ``key``."""
    import io

    import numpy as np
    from instruct_selectors.target_sim import target_rows, target_vector

    paths = {}
    if "target_sim" in cfg.score.scores:
        paths["target_embedding"] = run.target_embedding(key)
    if "otd" in cfg.score.scores:
        paths["target_matrix"] = run.target_matrix(key)
    if not all(p.exists() for p in paths.values()):
        with stage_usage(run, "condition"):
            rows = target_rows(get_llm(cfg.model), target, cfg.score.target_pooling)
        arrays = {"target_embedding": target_vector(rows), "target_matrix": rows}
        for name, path in paths.items():
            if not path.exists():
                buf = io.BytesIO()
                np.save(buf, arrays[name])
                atomic_write_bytes(path, buf.getvalue())
    return {name: str(p) for name, p in paths.items()}


def score_shard(cfg: PipelineConfig, run: RunFolder, index: int, conditional_model: str | None = None,
                target_embedding: str | None = None, target_matrix: str | None = None) -> int:
    """Score examples shard ``index`` into scored/ (skipped when already there). Returns its rows.

    ``conditional_model``, ``target_embedding`` and ``target_matrix`` are what the condition stage
    made (its record)."""
    out = shard_path(run.scored, index)
    if out.exists():
        return pl.read_parquet(out).height
    scores = tuple(cfg.score.scores)
    if "color" in scores and conditional_model is None:
        raise ValueError("score 'color' needs the conditional model: run the condition stage first")
    if "target_sim" in scores and target_embedding is None:
        raise ValueError("score 'target_sim' needs the target embedding: run the condition stage first")
    if "otd" in scores and target_matrix is None:
        raise ValueError("score 'otd' needs the target rows' embeddings: run the condition stage first")
    table = pl.read_parquet(shard_path(run.examples, index))
    cond = get_llm(cfg.model, model=str(run.path(conditional_model))) if "color" in scores else None
    prior = get_llm(cfg.model, eager="ctx_attn" in scores)
    import numpy as np

    vector = np.load(run.path(target_embedding)) if target_embedding is not None else None
    matrix = np.load(run.path(target_matrix)) if target_matrix is not None else None
    with stage_usage(run, "score", index):  # saved before the shard, like the judge's rejects
        scored = _score_rows(cfg, run, index, table, prior, cond, vector, matrix)
    from instruct_selectors.score_notes import write_shard_counts

    write_shard_counts(run.score_counts(index), prior, table)  # rows cut to max_length, for the record
    atomic_write_parquet(scored, out)
    return scored.height


def _score_rows(cfg: PipelineConfig, run: RunFolder, index: int, table: pl.DataFrame, prior, cond,
                vector, matrix=None) -> pl.DataFrame:
    from instruct_selectors.score import score_table

    scores = tuple(cfg.score.scores)
    scored = score_table(table, prior, scores=scores, cond_llm=cond, attn_layer=cfg.score.attn_layer,
                         color_reduction=cfg.score.color_reduction, target_vector=vector,
                         target_pooling=cfg.score.target_pooling, target_matrix=matrix)
    if "judge" in scores:
        from instruct_selectors.judge import judge_rows

        j = cfg.score.judge
        judged = judge_rows(table, get_llm(judge_model(cfg)), retries=j.retries, max_tokens=j.max_tokens,
                            seed=cfg.run.seed)
        scored = scored.with_columns(judged.column())
        if judged.rejects:  # written before the shard: the shard's existence marks this index done
            atomic_write_jsonl(judged.rejects, run.score_rejects(index))
    return scored


def judge_model(cfg: PipelineConfig) -> ModelConfig:
    """The run's model settings with the judge's own backend/model/endpoint where set."""
    j = cfg.score.judge
    chosen = {"backend": j.backend, "model": j.model, "base_url": j.base_url}
    return cfg.model.model_copy(update={k: v for k, v in chosen.items() if v is not None})


def score_record(cfg: PipelineConfig, run: RunFolder, started: float, rows: int) -> dict[str, Any]:
    """The score stage's record, once every shard is scored (by :func:`score` or by mapped tasks)."""
    extra: dict[str, Any] = {}
    if "judge" in cfg.score.scores:
        rejects = sum(len(p.read_text().splitlines()) for p in run.score_rejects_files())
        extra = {"rejects": rejects, "judge": {"model": judge_model(cfg).model, "unparsed": rejects}}
    from instruct_selectors.score_notes import score_losses

    # Rows truncated to max_length, null scores and why: counted, and said in `notes` (and the report).
    extra.update(score_losses(run.score_counts_files(), list_shards(run.scored), rows))
    return _record(run, "score", started, rows_in=rows, rows_out=rows, scores=list(cfg.score.scores),
                   usage=saved_usage(cfg, run, "score"), **extra)


def score(cfg: PipelineConfig, run: RunFolder, conditioned: dict[str, Any] | None = None) -> dict[str, Any]:
    """Score every examples shard in this process (the flow maps :func:`score_shard` instead).

    ``conditioned``: the condition stage's record, when a target score is asked for."""
    t0 = time.perf_counter()
    made = conditioned or {}
    rows = sum(score_shard(cfg, run, i, made.get("conditional_model"), made.get("target_embedding"),
                           made.get("target_matrix"))
               for i in range(len(list_shards(run.examples))))
    return score_record(cfg, run, t0, rows)


def select(cfg: PipelineConfig, run: RunFolder) -> dict[str, Any]:
    """Select over the scored shards in two passes (instruct_selectors.stream_select): memory holds
    per-row state only (ids, the columns the steps read, dedup hashes), not the texts."""
    from instruct_selectors.context_dependency import (
        PAPER_THRESHOLD,
        context_threshold,
        tag_context_dependent,
    )
    from instruct_selectors.stream_select import select_shards

    from pipelines.shards import atomic_write_text

    t0 = time.perf_counter()
    decontam = cfg.select.decontaminate
    extra: dict[str, Any] = {}
    shards = list_shards(run.scored)
    prepare, carry = None, []
    if decontam.against:
        from instruct_selectors.decontam import COLUMN, build_index, contamination_counts, mark

        index = build_index(eval_sets(decontam.against), n=decontam.n)  # once; shards stream through it
        prepare, carry = (lambda t: mark(t, index)), [COLUMN]
    names = pl.read_parquet_schema(shards[0]).keys() if shards else []
    column = next((c for c in ("score_ctx_attn", "score_ctx_loss") if c in names), None)
    finish = None
    if column:
        carry.append(column)
        threshold, quantile = cfg.score.ctx_threshold, cfg.score.ctx_quantile

        def finish(compact: pl.DataFrame):  # the cut-off is over every row (a quantile may be asked)
            cut = context_threshold(compact[column], threshold if threshold is not None or quantile is not None
                                    else PAPER_THRESHOLD, quantile)
            return lambda t: tag_context_dependent(t, column, threshold=cut)

    summary, compact = select_shards(shards, cfg.select.steps_to_run(), run.selected, prepare=prepare,
                                     carry=carry, finish=finish)
    if decontam.against:
        extra["decontamination"] = {"against": list(decontam.against), "n": decontam.n,
                                    "eval_ngrams": index.sizes(), **contamination_counts(compact)}
    atomic_write_text(run.selection_summary, summary.write_json())
    kept = int(compact["keep"].sum())
    return _record(run, "select", t0, rows_in=compact.height, rows_out=kept, steps=summary.to_dicts(), **extra)


def eval_sets(paths: list[str]) -> dict[str, pl.DataFrame]:
    """Eval set name (its file name; the path when two share a name) -> its rows, via pipelines.io."""
    from pipelines.io import read_examples

    names = [Path(p).name for p in paths]
    return {(n if names.count(n) == 1 else p): read_examples(resolve_path(p)).table
            for n, p in zip(names, paths, strict=True)}


def refusal_aware(cfg: PipelineConfig, run: RunFolder) -> dict[str, Any]:
    """R-Tuning on the kept rows (transform.refusal_aware, generators/refusal.py): the model answers
    each one; transformed/ gets the certainty suffix, meta.known and response_original, shard by
    shard (shards already there are skipped). Export then writes these rows."""
    from generators.refusal import run_refusal_aware

    c = cfg.transform.refusal_aware
    if not c.enabled:
        raise ValueError("transform.refusal_aware is off: --set transform.refusal_aware.enabled=true")
    t0 = time.perf_counter()
    kept = pl.read_parquet(run.selected).filter(pl.col("keep"))
    with stage_usage(run, "refusal_aware") as used:
        counts = run_refusal_aware(kept, run.transformed, get_llm(cfg.model), metric=c.metric,
                                   threshold=c.threshold, max_tokens=c.max_tokens, shard_size=cfg.run.shard_size)
        return _record(run, "refusal_aware", t0, usage=usage_field(cfg, used), **counts)


def models_per_stage(cfg: PipelineConfig, records: list[dict[str, Any]]) -> dict[str, str]:
    """Lineage for the card: which model (and backend) each stage that ran used."""
    ran = {r["stage"] for r in records}
    main = f"{cfg.model.model} ({cfg.model.backend} backend)"
    models = {stage: main for stage in ("generate_taxonomy", "generate_text") if stage in ran}
    if "score" in ran:
        models["score (prior)"] = main
        if "color" in cfg.score.scores:
            models["condition (CoLoR conditional)"] = (f"{cfg.model.model} fine-tuned on {cfg.score.target} "
                                                       f"({cfg.score.conditional_method})")
        if "judge" in cfg.score.scores:
            j = judge_model(cfg)
            models["score (judge)"] = f"{j.model} ({j.backend} backend)"
    if "refusal_aware" in ran:
        models["refusal_aware (greedy answers)"] = main
    if cfg.train.method:
        models["train"] = f"{cfg.model.model} ({cfg.train.method})"
    return models


def generator_settings(cfg: PipelineConfig) -> dict[str, Any]:
    g = cfg.generate
    out: dict[str, Any] = {}
    if g.taxonomy.enabled:
        out["GLAN (generate_taxonomy)"] = g.taxonomy.model_dump(mode="json", exclude={"enabled"})
    if g.text.enabled:
        out["Bonito (generate_text)"] = g.text.model_dump(mode="json", exclude={"enabled"})
    if g.inputs:
        out["inputs"] = list(g.inputs)
    return out


def export(cfg: PipelineConfig, run: RunFolder, records: list[dict[str, Any]]) -> dict[str, Any]:
    from pipelines.export import export_dataset, push_to_hub
    from pipelines.export_stream import export_selected

    t0 = time.perf_counter()
    card_info = {
        "config": cfg.model_dump(mode="json"),
        "models": models_per_stage(cfg, records),
        "generators": generator_settings(cfg),
        "scores": {SCORE_COLUMNS[s]: SCORE_DEFINITIONS[s] for s in cfg.score.scores},
        "stages": records,
        "fingerprint": cfg.fingerprint(),
    }
    if cfg.transform.refusal_aware.enabled:  # the kept rows as the transform wrote them (+ dropped ones as they were)
        rows = pl.scan_parquet(run.selected)
        dropped = [rows.filter(~pl.col("keep")).collect()] if cfg.export.include_dropped else []
        table = pl.concat([read_shards(run.transformed), *dropped], how="diagonal_relaxed")
        selected = read_short_columns(run.selected)  # the card reads keep, scores, source and meta
        paths = export_dataset(table, run.dataset, card_info=card_info, selected=selected,
                               test_fraction=cfg.export.test_fraction, seed=cfg.run.seed)
        n_out = table.height
    else:  # batch by batch from the selection file (pipelines.export_stream): the same files
        paths, n_out = export_selected(run.selected, run.dataset, card_info=card_info,
                                       include_dropped=cfg.export.include_dropped,
                                       test_fraction=cfg.export.test_fraction, seed=cfg.run.seed)
    pushed = None
    if cfg.export.push_to_hub:
        pushed = push_to_hub(run.dataset, cfg.export.push_to_hub, private=cfg.export.private)
    rows_in = pl.scan_parquet(run.selected).select(pl.len()).collect().item()
    return _record(run, "export", t0, rows_in=rows_in, rows_out=n_out,
                   outputs={k: str(v) for k, v in paths.items()}, pushed=pushed)


def train(cfg: PipelineConfig, run: RunFolder, dataset_parquet: str) -> dict[str, Any]:
    """Fine-tune on the exported rows (``dataset_parquet``: the export record's outputs['parquet']).

    With ``train.control_tokens``, on every row of the selection table instead (bar dedup's drops
    and the export's test split), each prompt prefixed by its <|good|>/<|bad|> label."""
    from pipelines.finetune import run_training
    from pipelines.finetune.methods import resolve_method

    t0 = time.perf_counter()
    method, options = resolve_method(cfg.train.method, cfg.train.options)
    source, control = run.path(dataset_parquet), {}  # records name files relative to the run folder
    if cfg.train.control_tokens:  # conditioning instead of selection: every selected row, labelled
        from pipelines.finetune.control import write_control_rows

        test_split = ((run.load_record("export") or {}).get("outputs") or {}).get("test_parquet")
        control = {"control_rows": write_control_rows(run.selected, run.control_rows,
                                                      run.path(test_split) if test_split else None,
                                                      **cfg.train.control_tokens.model_dump())}
        source = run.control_rows
    metrics = run_training(
        source, run.train, method=method, model=cfg.model.model,
        eval_path=resolve_path(cfg.train.eval_path or cfg.score.target), max_steps=cfg.train.max_steps,
        seed=cfg.run.seed, options=options, conditional_indicator=cfg.train.conditional_indicator,
        control_tokens=bool(cfg.train.control_tokens), eval_before=True, max_length=cfg.model.max_length,
        refusal=cfg.transform.refusal_aware.model_dump(include={"metric", "threshold"})
        if cfg.transform.refusal_aware.enabled else None,
    )
    return _record(run, "train", t0, method=cfg.train.method, metrics=metrics, **control)


def report(run: RunFolder, records: list[dict[str, Any]]) -> dict[str, str]:
    """Write report.md and the score histograms from the stage records and the selected table."""
    from pipelines.report import read_report_table, write_run_report

    folder, name = run.report_paths()
    paths = write_run_report(folder, records, read_report_table(run.selected), out_name=name)
    return {k: str(v) for k, v in paths.items()}


# --------------------------------------------------------------------------- command line
def run_stage(stage: str, run: RunFolder, cfg: PipelineConfig) -> dict[str, Any]:
    """Run one stage on an existing run folder, taking upstream values from its stage records."""
    if stage == "score":
        return score(cfg, run, run.load_record("condition"))
    if stage == "export":
        return export(cfg, run, run.records(STAGES))
    if stage == "train":
        exported = run.load_record("export")
        if exported is None:
            raise ValueError(f"{run.root} has no export record: run the export stage first")
        return train(cfg, run, exported["outputs"]["parquet"])
    if stage == "report":
        return report(run, run.records(STAGES))
    return globals()[stage](cfg, run)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m flows.stages", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", choices=[*STAGES, "report"], help="the stage to (re)run")
    ap.add_argument("run_dir", help="an existing run folder (made by python -m flows.build_dataset)")
    ap.add_argument("--wait-lock", action="store_true",
                    help="if another process works in the run folder, wait for it instead of refusing")
    args = ap.parse_args(argv)
    run = RunFolder(Path(args.run_dir))
    try:
        cfg = PipelineConfig.model_validate_json(run.saved_config_json())
        with run.lock(wait=args.wait_lock):
            record = run_stage(args.stage, run, cfg)
    except (ValueError, FileNotFoundError, RuntimeError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    shown = {k: v for k, v in record.items() if k in ("stage", "rows_in", "rows_out", "rejects", "seconds")}
    print(shown or record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
