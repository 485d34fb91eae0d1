"""Build an instruction-tuning dataset: generate -> collect -> score -> select -> export [-> train].

    python -m flows.build_dataset                         # default run: embedded SmolLM2, data/
    python -m flows.build_dataset --config data/configs/default.toml --set run.seed=1
    python -m flows.build_dataset --train lora            # also fine-tune, evaluate, compare with random
    python -m flows.build_dataset --auto target_sim,color --train lora   # let proxy fine-tunes pick the ranking
    python -m flows.build_dataset --task-runner dask --dask-workers 2
    python -m flows.build_dataset --serve --cron "0 3 * * *"

The flow is thin: every task runs one stage of ``flows.pipeline.PIPELINE`` (one file each under
``flows/stages/``). Resume is keyed by content (flows/resume.py): a stage whose inputs are
unchanged is skipped, and each stage skips the shards it already made from the same inputs -- so
a run killed at any moment and started again finishes the remaining work only and writes the
same output, and a rerun after an input changed redoes exactly what depends on the change. The run folder is ``<out_dir>/run-<config fingerprint>`` unless --run-name is given.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

# No machine here reaches the internet: keep Prefect's telemetry from logging an error per run.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
# Prefect's temporary API server must create and migrate its database on a new PREFECT_HOME, and
# on a loaded 2-core machine that alone outlasts Prefect's default 20 s start-up limit: the first
# run on a fresh machine failed that way. A user's own setting still wins.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "600")
# Prefect creates PREFECT_HOME but not its parents; without them its server cannot open its
# database and the command waited out the start-up limit (10 minutes) before it failed.
if os.environ.get("PREFECT_HOME"):
    Path(os.environ["PREFECT_HOME"]).expanduser().mkdir(parents=True, exist_ok=True)
STARTED = time.perf_counter()  # before Prefect's import: the command's wall time counts it

from instruct_selectors.scores.catalogue import BUILTIN_NAMES  # noqa: E402
from prefect import flow, get_run_logger, task, unmapped  # noqa: E402
from prefect.artifacts import create_markdown_artifact, create_table_artifact  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402
from prefect.task_runners import ThreadPoolTaskRunner  # noqa: E402

from flows.config import ConfigError, PipelineConfig, load_config  # noqa: E402
from flows.pipeline import BY_NAME, STAGE_NAMES, check_inputs, run_keyed, stages_for  # noqa: E402
from flows.run_folder import RunFolder, RunFolderConflict  # noqa: E402
from flows.run_lock import RunFolderBusy  # noqa: E402
from flows.run_log import seconds_line, shard_line, stage_lines, stage_table  # noqa: E402
from flows.stages.base import StageContext  # noqa: E402
from pipelines.finetune.methods import METHOD_CHOICES  # noqa: E402
from pipelines.llm import BACKENDS  # noqa: E402
from pipelines.shards import WriteError  # noqa: E402

# No Prefect result cache: resume is keyed by content in flows.resume (a cached result could hide
# a changed input), and nothing in the run folder is ever unpickled.
TASK_OPTIONS = dict(cache_policy=NO_CACHE, persist_result=False)


def _context(cfg: PipelineConfig, run_dir: str, upstream: list[dict]) -> StageContext:
    return StageContext(cfg, RunFolder(run_dir), {r["stage"]: r for r in upstream})


@task(log_prints=False, **TASK_OPTIONS)  # log_prints off: datasets' fingerprinting prints bytecode
def stage_task(name: str, cfg: PipelineConfig, run_dir: str, upstream: list[dict]) -> dict:
    return run_keyed(name, _context(cfg, run_dir, upstream))


@task(**TASK_OPTIONS)
def shard_task(name: str, cfg: PipelineConfig, run_dir: str, index: Any, upstream: list[dict]) -> int:
    import time

    from pipelines.llm.usage import track_usage

    started = time.perf_counter()
    with track_usage() as used:
        rows = BY_NAME[name].per_shard.run_shard(_context(cfg, run_dir, upstream), index)
    get_run_logger().info(shard_line(name, index, rows, used.total().total_tokens, time.perf_counter() - started))
    return rows


def _publish(record: dict[str, Any], run: RunFolder) -> None:
    """Per-stage Prefect artifacts: a markdown summary and a table of sample rows."""
    from pipelines.report import sample_rows, stage_markdown

    key = record["stage"].replace("_", "-")
    create_markdown_artifact(stage_markdown(record), key=f"{key}-summary", description=f"{record['stage']} counts")
    sample = run.sample(record["stage"])
    if sample is not None and sample.height:
        create_table_artifact(sample_rows(sample), key=f"{key}-sample", description=f"{record['stage']} sample rows")


# One shard at a time in-process by default, also for callers of the bare flow (a deployment, a
# script): torch already uses every core for one batch, and models loaded in several threads at
# once can fail (transformers' loading is not thread-safe).
@flow(name="build-dataset", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=1))
def build_dataset(config: dict | None = None) -> dict:
    """Run every enabled stage (flows.pipeline.PIPELINE); returns {run_dir, dataset, report, kept, stages}."""
    body_started = time.perf_counter()
    cfg = PipelineConfig.model_validate(config or {})
    run = RunFolder(cfg.run_dir())
    run.root.mkdir(parents=True, exist_ok=True)
    rd = str(run.root)
    run.claim(cfg.fingerprint(), cfg.model_dump_json(indent=2))
    records: list[dict] = []
    logger = get_run_logger()
    for stage in stages_for(cfg):
        before = run.load_record(stage.name)
        options = dict(name=f"{stage.name}_task", retries=stage.retries,
                       retry_delay_seconds=[10, 60][: stage.retries] or 0)
        if stage.per_shard is None:
            rec = stage_task.with_options(**options)(stage.name, cfg, rd, list(records))
        else:  # one task per shard: the task runner (threads, or Dask workers) spreads them out
            shard_run = shard_task.with_options(**{**options, "name": f"{stage.name}_shard_task"})

            def map_shards(ctx: StageContext, todo: list[Any], name: str = stage.name, tasks=shard_run) -> int:
                from pipelines.progress import StageBar

                futures = tasks.map(unmapped(name), unmapped(cfg), unmapped(rd), list(todo),
                                    unmapped(list(records)))
                bar = StageBar(f"{name} shards", len(futures), unit="shard")  # the tasks run elsewhere
                try:
                    rows = 0
                    for f in futures:
                        rows += f.result()
                        bar(1)
                    return rows
                finally:
                    bar.close()

            rec = run_keyed(stage.name, _context(cfg, rd, records), map_shards=map_shards)
        records.append(rec)
        for line in stage_lines(rec, reused=rec == before):
            logger.info(line)
        _publish(rec, run)
    done = {r["stage"]: r for r in records}
    # Records name files relative to the run folder; the caller gets paths it can open.
    return {"run_dir": rd, "dataset": {k: str(run.path(v)) for k, v in done["export"]["outputs"].items()},
            "report": {k: str(run.path(v)) for k, v in done["report"]["outputs"].items()},
            "kept": done["select"]["rows_out"], "stages": [r for r in records if r["stage"] != "report"],
            "flow_seconds": time.perf_counter() - body_started}


class _NoTracebacks(logging.Filter):
    """Keeps tracebacks off the terminal: they go to the run log; main() prints one clear line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.exc_info


def route_tracebacks(log_path: Path) -> None:
    """Every log line (tracebacks included) to ``log_path``; the console loses records with tracebacks."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    if not any(getattr(h, "baseFilename", None) == str(log_path) for h in root.handlers):
        handler = logging.FileHandler(log_path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    for handler in root.handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.addFilter(_NoTracebacks())


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
    return ThreadPoolTaskRunner(max_workers=1)  # as the flow's own default


def configured_flow(args: argparse.Namespace):
    return build_dataset.with_options(task_runner=_task_runner(args))


def make_deployment(runnable, cfg: PipelineConfig, cron: str):
    """The scheduled deployment that --serve runs (and that `prefect deploy` would register)."""
    return runnable.to_deployment(name="build-dataset", cron=cron, parameters={"config": cfg.model_dump(mode="json")})


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m flows.build_dataset",
        description="Generate, score, select and export an instruction-tuning dataset.\n\nStages: "
        + " -> ".join(STAGE_NAMES) + " (train only with --train).",
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
    ap.add_argument("--backend", choices=BACKENDS, help="LLM backend")
    ap.add_argument("--model", help="'embedded' (default SmolLM2-135M-Instruct), 'tiny' or a local model folder")
    ap.add_argument("--input", action="append", default=[],
                    help="add an existing dataset: a file, a glob (quoted: 'incoming/*.jsonl') or a folder, "
                    "expanded in sorted order when the run starts (repeatable)")
    ap.add_argument("--no-taxonomy", action="store_true", help="skip the GLAN taxonomy generator")
    ap.add_argument("--no-text", action="store_true", help="skip the text-to-task generator")
    ap.add_argument("--refusal-aware", action="store_true",
                    help="R-Tuning: suffix each kept row with 'I am sure/unsure' by whether the model already "
                    "answers it (= --set transform.refusal_aware.enabled=true)")
    ap.add_argument("--scores", help=f"comma-separated scores: {', '.join(BUILTIN_NAMES)} or your own (score.custom)")
    ap.add_argument("--auto", metavar="RANKINGS", help="comma-separated rankings to try against the default with "
                    "proxy fine-tunes, e.g. target_sim,color,target_sim+color (= --set select.auto=[...])")
    ap.add_argument("--train", metavar="METHOD", choices=METHOD_CHOICES, help="also fine-tune: " + ", ".join(METHOD_CHOICES))
    ap.add_argument("--push-to-hub", metavar="REPO", help="push the dataset (token from HF_TOKEN; private)")
    ap.add_argument("--task-runner", choices=["thread", "dask"], default="thread", help="where shard tasks run")
    ap.add_argument("--dask-address", help="scheduler address of an existing Dask cluster")
    ap.add_argument("--dask-workers", type=int, default=2, help="workers of a local Dask cluster")
    ap.add_argument("--serve", action="store_true", help="serve the flow as a scheduled deployment")
    ap.add_argument("--cron", default="0 3 * * *", help="schedule for --serve (cron syntax)")
    ap.add_argument("--wait-lock", action="store_true",
                    help="if another process works in the run folder, wait for it instead of refusing")
    ap.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")
    ap.add_argument("--estimate", action="store_true", help="print the model calls, tokens, seconds and cost "
                    "each stage would take, then exit (flows/estimate.py)")
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
    if args.refusal_aware:
        overrides.append("transform.refusal_aware.enabled=true")
    if args.scores:
        overrides.append(f"score.scores=[{args.scores}]")
    if args.auto:
        overrides.append(f"select.auto=[{args.auto}]")
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
    for note in cfg.notes():
        print(f"note: {note}", file=sys.stderr)
    try:
        check_inputs(cfg)  # seconds, before Prefect starts or any model loads
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.estimate:
        from flows.estimate import estimate, estimate_text

        print(estimate_text(estimate(cfg)))
        return 0
    if cfg.model.threads is None and args.task_runner == "dask" and not args.dask_address:
        cfg.model.threads = max(1, (os.cpu_count() or 1) // args.dask_workers)  # share the cores
    run = RunFolder(cfg.run_dir())
    try:
        run.refuse_foreign()  # before the log and the lock are written into someone else's folder
    except RunFolderConflict as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    route_tracebacks(run.log)
    runnable = configured_flow(args)
    if args.serve:
        from prefect import serve

        serve(make_deployment(runnable, cfg, args.cron))
        return 0
    try:
        lock = run.lock(wait=args.wait_lock).acquire()  # before any stage; freed on exit or death
    except (RunFolderBusy, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    try:
        flow_called = time.perf_counter()
        result = runnable(config=cfg.model_dump(mode="json"))
        flow_call = time.perf_counter() - flow_called
    except Exception as e:  # noqa: BLE001 -- one clear line; the traceback is in the run log
        # error level: the traceback reaches run.log; the console's handlers drop records with one
        logging.getLogger("flows.build_dataset").error("build_dataset failed", exc_info=True)
        what = str(e) if isinstance(e, ValueError | FileNotFoundError | WriteError) else f"{type(e).__name__}: {e}"
        print(f"\nerror: {what}\nfull log: {run.log}\nrun folder (kept; the same command resumes): "
              f"{run.root}", file=sys.stderr)
        return 1
    finally:
        lock.release()
    from flows.estimate import update_rates

    update_rates(result["stages"])  # what --estimate reads: this machine's tokens/s per stage and model
    print("\n=== build_dataset finished ===")
    print(stage_table(result["stages"]))
    print(seconds_line(time.perf_counter() - STARTED, flow_called - STARTED, flow_call, result))
    print(f"run folder: {result['run_dir']}")
    for name, path in result["dataset"].items():
        print(f"dataset ({name}): {path}")
    for name, path in result["report"].items():
        print(f"report ({name}): {path}")
    print(f"rows kept: {result['kept']}")
    print(f"see every row, kept and dropped: python -m flows.view {result['run_dir']}")
    chosen = next((r for r in result["stages"] if r["stage"] == "choose" and r.get("choice")), None)
    if chosen:
        from flows.verdict import selection_verdict
        from pipelines.finetune.compare import choice_text

        graded = chosen["graded_on"]["rows"]
        print(f"\n=== which ranking? (select.auto: proxy fine-tunes, loss on {graded} held-out target rows) ===")
        print(choice_text(chosen["table"], chosen["choice"]))
        print(" ".join(selection_verdict([chosen])).replace("**", ""))
    trained = next((r for r in result["stages"] if r["stage"] == "train" and r.get("comparison")), None)
    if trained:
        from pipelines.finetune.compare import comparison_text

        print("\n=== does the selection beat random? (held-out loss, lower is better) ===")
        print(comparison_text(trained["comparison"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
