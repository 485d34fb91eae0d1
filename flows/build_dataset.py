"""Build an instruction-tuning dataset: generate -> collect -> score -> select -> export [-> train].

    python -m flows.build_dataset                         # default run: embedded SmolLM2, data/
    python -m flows.build_dataset --config data/configs/default.toml --set run.seed=1
    python -m flows.build_dataset --train lora            # also fine-tune and evaluate
    python -m flows.build_dataset --task-runner dask --dask-workers 2
    python -m flows.build_dataset --serve --cron "0 3 * * *"

The flow is thin: every task calls a function in ``flows/stages.py``. Tasks are cached on
their inputs (config JSON, run folder, upstream records) and their source, with results persisted
in the run folder, and each stage skips the shards it already wrote -- so a run killed at any
moment and started again with the same config finishes the remaining work only and writes the
same output. The run folder is ``<out_dir>/run-<config fingerprint>`` unless --run-name is given.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

# No machine here reaches the internet: keep Prefect's telemetry from logging an error per run.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

from prefect import flow, task, unmapped  # noqa: E402
from prefect.artifacts import create_markdown_artifact, create_table_artifact  # noqa: E402
from prefect.cache_policies import INPUTS, TASK_SOURCE  # noqa: E402
from prefect.filesystems import LocalFileSystem  # noqa: E402

from flows import stages  # noqa: E402
from flows.config import ConfigError, PipelineConfig, load_config  # noqa: E402

CACHE = INPUTS + TASK_SOURCE
LLM_RETRIES = dict(retries=2, retry_delay_seconds=[10, 60])


def _cfg(config_json: str) -> PipelineConfig:
    return PipelineConfig.model_validate_json(config_json)


@task(cache_policy=CACHE, persist_result=True, **LLM_RETRIES)
def generate_taxonomy_task(config_json: str, run_dir: str, run_token: str) -> dict:
    return stages.generate_taxonomy(_cfg(config_json), Path(run_dir))


@task(cache_policy=CACHE, persist_result=True, **LLM_RETRIES)
def generate_text_task(config_json: str, run_dir: str, run_token: str) -> dict:
    return stages.generate_text(_cfg(config_json), Path(run_dir))


@task(cache_policy=CACHE, persist_result=True)
def collect_task(config_json: str, run_dir: str, run_token: str, upstream: list[dict]) -> dict:
    return stages.collect(_cfg(config_json), Path(run_dir))


@task(cache_policy=CACHE, persist_result=True)
def condition_task(config_json: str, run_dir: str, run_token: str) -> dict:
    return stages.condition(_cfg(config_json), Path(run_dir))


@task(cache_policy=CACHE, persist_result=True, **LLM_RETRIES)
def score_shard_task(config_json: str, run_dir: str, run_token: str, index: int, upstream: list[dict]) -> int:
    return stages.score_shard(_cfg(config_json), Path(run_dir), index)


@task(cache_policy=CACHE, persist_result=True)
def select_task(config_json: str, run_dir: str, run_token: str, upstream: dict) -> dict:
    return stages.select(_cfg(config_json), Path(run_dir))


# log_prints off: datasets' fingerprinting prints bytecode that would flood the run log.
@task(cache_policy=CACHE, persist_result=True, log_prints=False)
def export_task(config_json: str, run_dir: str, run_token: str, records: list[dict]) -> dict:
    return stages.export(_cfg(config_json), Path(run_dir), records)


@task(cache_policy=CACHE, persist_result=True)
def train_task(config_json: str, run_dir: str, run_token: str, upstream: dict) -> dict:
    return stages.train(_cfg(config_json), Path(run_dir))


def _publish(record: dict[str, Any], run_dir: Path) -> None:
    """Per-stage Prefect artifacts: a markdown summary and a table of sample rows."""
    from pipelines.report import sample_rows, stage_markdown

    key = record["stage"].replace("_", "-")
    create_markdown_artifact(stage_markdown(record), key=f"{key}-summary", description=f"{record['stage']} counts")
    sample = _stage_sample(record["stage"], run_dir)
    if sample is not None and sample.height:
        create_table_artifact(sample_rows(sample), key=f"{key}-sample", description=f"{record['stage']} sample rows")


def _stage_sample(stage: str, run_dir: Path):
    import polars as pl

    folder = {"generate_taxonomy": run_dir / "generate_taxonomy" / "examples",
              "generate_text": run_dir / "generate_text" / "examples",
              "collect": run_dir / "examples", "score": run_dir / "scored"}.get(stage)
    if folder is not None:
        first = sorted(folder.glob("part-*.parquet"))
        return pl.read_parquet(first[0]) if first else None
    if stage in ("select", "export") and (run_dir / "selected" / "all.parquet").exists():
        return pl.read_parquet(run_dir / "selected" / "all.parquet")
    return None


def check_run_folder_config(run_dir: Path, fingerprint: str) -> None:
    """A run folder belongs to one config: its shards are skipped on resume, so reusing the folder
    with other settings would silently keep stale outputs. Refuse instead."""
    path = run_dir / ".config-fingerprint"
    if path.exists() and path.read_text().strip() != fingerprint:
        raise ValueError(f"run folder {run_dir} was made with a different configuration "
                         f"(fingerprint {path.read_text().strip()} vs {fingerprint}): use another --run-name")
    if not path.exists():
        from pipelines.shards import atomic_write_text

        atomic_write_text(path, fingerprint)


def run_folder_token(run_dir: Path, fingerprint: str) -> str:
    """A random id made once per run folder and passed to every task as an input.

    Cache keys then belong to this folder's life: a deleted and recreated folder (or another
    machine's cache with the same config and paths) can never return results whose files are gone.
    """
    check_run_folder_config(run_dir, fingerprint)
    path = run_dir / ".run-token"
    if not path.exists():
        import uuid

        from pipelines.shards import atomic_write_text

        atomic_write_text(path, uuid.uuid4().hex)
    return path.read_text().strip()


@flow(name="build-dataset", log_prints=True)
def build_dataset(config: dict | None = None) -> dict:
    """Run every enabled stage; returns {run_dir, dataset, report, stages}."""
    cfg = PipelineConfig.model_validate(config or {})
    run_dir = cfg.run_dir()
    run_dir.mkdir(parents=True, exist_ok=True)
    cj, rd = cfg.model_dump_json(), str(run_dir)
    token = run_folder_token(run_dir, cfg.fingerprint())
    # Task results (the cache behind resume) live in the run folder, next to the data they describe.
    # (A block must be saved before tasks may use it; its name is unique per run folder.)
    storage = LocalFileSystem(basepath=str(run_dir / ".prefect-results"))
    storage.save(f"results-{hashlib.sha1(rd.encode()).hexdigest()[:16]}", overwrite=True)

    def in_run(t):
        return t.with_options(result_storage=storage)

    records: list[dict] = []

    def done(rec: dict) -> dict:
        records.append(rec)
        _publish(rec, run_dir)
        return rec

    generated = []
    if cfg.generate.taxonomy.enabled:
        generated.append(done(in_run(generate_taxonomy_task)(cj, rd, token)))
    if cfg.generate.text.enabled:
        generated.append(done(in_run(generate_text_task)(cj, rd, token)))
    collected = done(in_run(collect_task)(cj, rd, token, generated))
    upstream = [collected]
    if "color" in cfg.score.scores:
        upstream.append(done(in_run(condition_task)(cj, rd, token)))
    score_started = time.perf_counter()
    # One task per shard: the task runner (threads, or Dask workers) spreads them out.
    futures = in_run(score_shard_task).map(unmapped(cj), unmapped(rd), unmapped(token), list(range(collected["shards"])), unmapped(upstream))
    rows = sum(f.result() for f in futures)
    done(stages.score_record(cfg, run_dir, score_started, rows))
    selected = done(in_run(select_task)(cj, rd, token, records[-1]))
    exported = done(in_run(export_task)(cj, rd, token, records))
    if cfg.train.method:
        done(in_run(train_task)(cj, rd, token, exported))

    import polars as pl

    from pipelines.report import write_run_report

    report = write_run_report(run_dir, records, pl.read_parquet(run_dir / "selected" / "all.parquet"))
    result = {"run_dir": rd, "dataset": exported["outputs"], "report": {k: str(v) for k, v in report.items()},
              "kept": selected["rows_out"], "stages": records}
    return result


def _task_runner(args: argparse.Namespace):
    if args.task_runner == "dask":
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError as e:
            raise SystemExit("the dask task runner needs: pip install '.[dask]'") from e
        if args.dask_address:
            return DaskTaskRunner(address=args.dask_address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": args.dask_workers, "threads_per_worker": 1,
                                              "processes": True})
    from prefect.task_runners import ThreadPoolTaskRunner

    # One shard at a time in-process: torch already uses every core for one batch.
    return ThreadPoolTaskRunner(max_workers=1)


def configured_flow(args: argparse.Namespace):
    return build_dataset.with_options(task_runner=_task_runner(args))


def make_deployment(runnable, cfg: PipelineConfig, cron: str):
    """The scheduled deployment that --serve runs (and that `prefect deploy` would register)."""
    return runnable.to_deployment(name="build-dataset", cron=cron, parameters={"config": cfg.model_dump(mode="json")})


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m flows.build_dataset",
        description="Generate, score, select and export an instruction-tuning dataset.\n\nStages: "
        + " -> ".join(stages.STAGES) + " (train only with --train).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Every option of the config file can be set with --set section.key=value; "
        "see data/configs/default.toml for all of them.",
    )
    ap.add_argument("--config", help="TOML or YAML file with any of the options (see data/configs/default.toml)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="override one config option, e.g. --set generate.text.max_passages=3 (repeatable)")
    ap.add_argument("--run-name", help="run folder name (default: run-<config fingerprint>)")
    ap.add_argument("--out-dir", help="folder for run folders (default: runs)")
    ap.add_argument("--seed", type=int, help="seed for generation, selection and training")
    ap.add_argument("--backend", choices=["auto", "hf", "vllm", "openai", "llamacpp"], help="LLM backend")
    ap.add_argument("--model", help="'embedded' (default SmolLM2-135M-Instruct), 'tiny' or a local model folder")
    ap.add_argument("--input", action="append", default=[], help="add an existing dataset (repeatable)")
    ap.add_argument("--no-taxonomy", action="store_true", help="skip the GLAN taxonomy generator")
    ap.add_argument("--no-text", action="store_true", help="skip the text-to-task generator")
    ap.add_argument("--scores", help="comma-separated scores: color, ifd, ctx_loss, ctx_attn")
    ap.add_argument("--train", metavar="METHOD", help="also fine-tune: full, lora, rslora, lisa, hft or mezo")
    ap.add_argument("--push-to-hub", metavar="REPO", help="push the dataset (token from HF_TOKEN; private)")
    ap.add_argument("--task-runner", choices=["thread", "dask"], default="thread", help="where shard tasks run")
    ap.add_argument("--dask-address", help="scheduler address of an existing Dask cluster")
    ap.add_argument("--dask-workers", type=int, default=2, help="workers of a local Dask cluster")
    ap.add_argument("--serve", action="store_true", help="serve the flow as a scheduled deployment")
    ap.add_argument("--cron", default="0 3 * * *", help="schedule for --serve (cron syntax)")
    ap.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")
    return ap.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> PipelineConfig:
    overrides = list(args.overrides)
    named = {"run.name": args.run_name, "run.out_dir": args.out_dir, "run.seed": args.seed,
             "model.backend": args.backend, "model.model": args.model, "train.method": args.train,
             "export.push_to_hub": args.push_to_hub}
    overrides += [f"{k}={v}" for k, v in named.items() if v is not None]
    if args.no_taxonomy:
        overrides.append("generate.taxonomy.enabled=false")
    if args.no_text:
        overrides.append("generate.text.enabled=false")
    if args.scores:
        overrides.append(f"score.scores=[{args.scores}]")
    cfg = load_config(args.config, overrides)
    if args.input:
        cfg.generate.inputs = [*cfg.generate.inputs, *args.input]
    return cfg


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = config_from_args(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.print_config:
        print(json.dumps(cfg.model_dump(mode="json"), indent=2))
        return 0
    runnable = configured_flow(args)
    if args.serve:
        from prefect import serve

        serve(make_deployment(runnable, cfg, args.cron))
        return 0
    try:
        result = runnable(config=cfg.model_dump(mode="json"))
    except (ValueError, FileNotFoundError) as e:  # bad input: InputError, a bad taxonomy, a missing file
        print(f"\nerror: {e}\nrun folder (kept for resume): {cfg.run_dir()}", file=sys.stderr)
        return 1
    print("\n=== build_dataset finished ===")
    print(f"run folder: {result['run_dir']}")
    for name, path in result["dataset"].items():
        print(f"dataset ({name}): {path}")
    for name, path in result["report"].items():
        print(f"report ({name}): {path}")
    print(f"rows kept: {result['kept']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
