"""Generation (Bonito) and scoring together on 1 and 2 Dask workers (LocalCluster, one thread each).

    python -m benchmarks.scaleout [--passages 8] [--rows 64] [--shard-size 8] [--max-tokens 64]
                                  [--model embedded] [--threads 1]
    python -m benchmarks.scaleout --smoke       # tiny model, a few rows: checks it runs, measures nothing

Both jobs are the flow's own stages, mapped per shard as the flow maps them: generate_text's
shards (passages x task types; ``flows/stages/generate_text.py``), then collect, then score's
shards (the generated rows plus ``--rows`` Alpaca rows from
../shared/datasets/instruct_general/alpaca_en_demo.json, for IFD and the context-loss variant).
Each worker loads the model once before the clock starts and runs torch on --threads threads, so 2
workers use twice the cores of 1. Each worker count gets a fresh run folder. Last line:
speedup=<t1/t2> over generation + scoring.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from flows.config import PipelineConfig
from flows.pipeline import BY_NAME
from flows.run_folder import RunFolder
from flows.stages.base import StageContext
from pipelines.shards import atomic_write_jsonl


def _rows(n: int) -> list[dict]:
    from benchmarks.common import shared_datasets

    try:
        data = json.loads((shared_datasets() / "instruct_general" / "alpaca_en_demo.json").read_text())
    except SystemExit:  # no shared data: synthetic rows of the same shape
        data = [{"instruction": f"Explain item {i} in one sentence.", "input": "",
                 "output": f"Item {i} is a thing with {i % 5 + 2} parts."} for i in range(n)]
    return data[:n]


def _shard(stage: str, cfg_json: str, run_dir: str, index: int) -> int:
    ctx = StageContext(PipelineConfig.model_validate_json(cfg_json), RunFolder(run_dir), {})
    return BY_NAME[stage].per_shard.run_shard(ctx, index)


def _warm(cfg_json: str) -> bool:
    from flows.llm_cache import get_llm

    get_llm(PipelineConfig.model_validate_json(cfg_json).model)
    return True


def time_workers(workers: int, cfg: PipelineConfig, folder: Path) -> float:
    from dask.distributed import Client, LocalCluster

    run = RunFolder(folder)
    run.claim(cfg.fingerprint(), cfg.model_dump_json())
    ctx, cj = StageContext(cfg, run, {}), cfg.model_dump_json()
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                      host="127.0.0.1") as cluster, Client(cluster) as client:
        client.run(_warm, cj)

        def mapper(stage: str):
            def map_shards(c: StageContext, todo: list[int]) -> int:
                futures = client.map(_shard, [stage] * len(todo), [cj] * len(todo), [str(folder)] * len(todo),
                                     todo, pure=False)
                return sum(client.gather(futures))
            return map_shards

        t0 = time.perf_counter()
        gen = BY_NAME["generate_text"].per_shard.run_all(ctx, mapper("generate_text"))
        t1 = time.perf_counter()
        BY_NAME["collect"].run(ctx)
        t2 = time.perf_counter()
        scored = BY_NAME["score"].per_shard.run_all(ctx, mapper("score"))
        t3 = time.perf_counter()
    tokens = sum(u.get("completion_tokens", 0) for u in gen.get("usage", {}).values() if isinstance(u, dict))
    print(f"workers={workers} threads_per_worker={cfg.model.threads} generate_s={t1 - t0:.2f} "
          f"generated_rows={gen['rows_out']} completion_tokens={tokens} gen_tokens_per_s={tokens / (t1 - t0):.1f} "
          f"collect_s={t2 - t1:.2f} score_s={t3 - t2:.2f} scored_rows={scored['rows_out']} "
          f"scored_rows_per_s={scored['rows_out'] / (t3 - t2):.2f} total_s={t3 - t0:.2f}", flush=True)
    return t3 - t0


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--passages", type=int, default=8, help="passages of data/passages.jsonl to generate from")
    ap.add_argument("--rows", type=int, default=64, help="Alpaca rows to score besides the generated ones")
    ap.add_argument("--shard-size", type=int, default=8, help="items (generation) and rows (scoring) per task")
    ap.add_argument("--max-tokens", type=int, default=64, help="token cap per generated answer")
    ap.add_argument("--model", default="embedded", help="embedded, tiny or a local model folder")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    ap.add_argument("--smoke", action="store_true", help="tiny model, 2 passages, 8 rows: a check, not a figure")
    args = ap.parse_args(argv)
    if args.smoke:
        args.model, args.passages, args.rows, args.shard_size, args.max_tokens = "tiny", 2, 8, 4, 16

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "rows.jsonl"
        atomic_write_jsonl(_rows(args.rows), data)
        cfg = PipelineConfig.model_validate({
            "model": {"backend": "hf", "model": args.model, "max_length": 256, "threads": args.threads},
            "generate": {"taxonomy": {"enabled": False}, "inputs": [str(data)],
                         "text": {"max_passages": args.passages, "max_tokens": args.max_tokens}},
            "score": {"scores": ["ifd", "ctx_loss"]}, "run": {"shard_size": args.shard_size}})
        t1 = time_workers(1, cfg, Path(tmp) / "w1")
        t2 = time_workers(2, cfg, Path(tmp) / "w2")
    print(f"speedup={t1 / t2:.3f}")


if __name__ == "__main__":
    main()
