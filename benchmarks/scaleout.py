"""The same scoring job on 1 and 2 Dask workers (LocalCluster), same process, same shards.

    python -m benchmarks.scaleout [--rows 128] [--shard-size 16] [--model embedded] [--threads 1]

Rows: Alpaca-format examples from ../shared/datasets/instruct_general/alpaca_en_demo.json, scored
for IFD and the context-loss variant (the flow's `score` stage, `flows.stages.score.score_shard`,
one task per shard). Each worker loads the model once before the clock starts; each worker
uses --threads torch threads, so 2 workers use twice the cores of 1. Last line: speedup=<t1/t2>.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks.common import shared_datasets
from flows.config import PipelineConfig
from flows.run_folder import RunFolder
from pipelines.schema import make_example, to_table
from pipelines.shards import write_shards


def _prepare(run: RunFolder, rows: int, shard_size: int) -> int:
    data = json.loads((shared_datasets() / "instruct_general" / "alpaca_en_demo.json").read_text())[:rows]
    table = to_table(make_example(r["instruction"], r["output"], r.get("input", ""), "alpaca_en_demo") for r in data)
    return write_shards(table, run.examples, shard_size)


def _score(cfg_json: str, run_dir: str, index: int, threads: int) -> int:
    import torch

    from flows.stages.score import score_shard

    torch.set_num_threads(threads)
    return score_shard(PipelineConfig.model_validate_json(cfg_json), RunFolder(run_dir), index)


def _warm(cfg_json: str, threads: int) -> bool:
    import torch

    from flows.llm_cache import get_llm

    torch.set_num_threads(threads)
    get_llm(PipelineConfig.model_validate_json(cfg_json).model)
    return True


def time_workers(workers: int, cfg: PipelineConfig, run: RunFolder, n_shards: int, threads: int) -> float:
    from dask.distributed import Client, LocalCluster

    shutil.rmtree(run.scored, ignore_errors=True)
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        cj = cfg.model_dump_json()
        client.run(_warm, cj, threads)
        t = time.perf_counter()
        futures = client.map(_score, [cj] * n_shards, [str(run.root)] * n_shards, range(n_shards),
                             [threads] * n_shards, pure=False)
        rows = sum(client.gather(futures))
        elapsed = time.perf_counter() - t
    print(f"workers={workers} threads_per_worker={threads} rows={rows} seconds={elapsed:.2f} "
          f"rows_per_s={rows / elapsed:.2f}")
    return elapsed


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=128, help="rows to score")
    ap.add_argument("--shard-size", type=int, default=16, help="rows per shard (one Dask task each)")
    ap.add_argument("--model", default="embedded", help="embedded, tiny or a local model folder")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    args = ap.parse_args(argv)

    cfg = PipelineConfig.model_validate({"model": {"backend": "hf", "model": args.model, "max_length": 256},
                                         "score": {"scores": ["ifd", "ctx_loss"]}})
    with tempfile.TemporaryDirectory() as tmp:
        run = RunFolder(Path(tmp))
        n_shards = _prepare(run, args.rows, args.shard_size)
        t1 = time_workers(1, cfg, run, n_shards, args.threads)
        t2 = time_workers(2, cfg, run, n_shards, args.threads)
    print(f"speedup={t1 / t2:.3f}")


if __name__ == "__main__":
    main()
