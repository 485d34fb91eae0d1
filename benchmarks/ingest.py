"""Ingest at scale with model scoring off: read -> collect -> exact + MinHash dedup -> select -> export.

    python -m benchmarks.ingest                 # 1,000,000 rows (about 1 GB of JSON lines)
    python -m benchmarks.ingest --rows 100000   # smaller
    python -m benchmarks.ingest --keep --dir /tmp/ingest
    python -m benchmarks.ingest --rows 10000000 --no-reference --lean-disk   # 10M: about 47 GB of disk

Generates a seeded JSON lines input (Alpaca fields; about 1 KB a row; 5% exact duplicates after
normalisation, 5% near duplicates with one word in 40 changed, 0.1% rows without an answer that
become rejects) into a temporary folder, then runs the stages of flows.pipeline directly:
collect (chunked reading, examples shards), a model-free "score" (scored shards = examples +
``score_len``, the response's word count, so threshold / top_k have a column), select
(dedup exact + near, a length threshold, top_k: two passes over the shards) and export
(Parquet, JSONL, HF dataset, card). Prints seconds per step, the same file read by a bare
``polars.read_ndjson`` in a child process as the reference (its own peak RSS as
``reference_rss_mb``, so it does not count toward the pipeline's), then ``rows_per_s=`` (input
rows / pipeline seconds) and ``peak_rss_mb=`` (max RSS of this process and its children bar the
reference) last. Each step's own peak RSS is printed as ``rss_<step>_mb=``: the kernel's high-water
mark (VmHWM) is reset before the step (``/proc/self/clear_refs``), so a step's figure is not the
peak of the steps before it; where that reset is refused, the figures are peaks so far. Goal
(issue 24.3): peak RSS <= 1 GB at 1M rows and <= 2 GB at 10M (select state flat in rows),
>= 10,000 rows/s on 2 cores.

Measured on 2 cores, one benchmark at a time (seconds per step; peak RSS MB per step):

    rows  commit   rows/s   collect  score_len  select  export   peak RSS MB: collect/score/select/export
    1M    a15fb77   7,509    34.2     13.9       49.9    35.1     472 / 537 / 897 / 743
    1M    30c145b  11,180    20.1      8.5       38.0    22.8     447 / 532 / 855 / 735
    10M   3ec8eeb   7,537 *  281      122        682     242      438 / 523 / 1,780 / 1,725
    10M   3917f50   7,494 ** 286      123        623     302      450 / 525 / 1,743 / 1,676

    * beside the test suite for its first 20 minutes; ** beside benchmarks.selection throughout
    (both --no-reference --lean-disk: their rows/s are not quiet figures, their RSS is)
The two 1M rows ran minutes apart on the same machine (a15fb77 measured 8,109-9,118 rows/s on the
machine of an earlier session: machines differ, so compare rows from one sitting). What made
the difference: Parquet at zstd level 1, dedup hashing in threads one per core with polars'
text normalisation and numpy's minimum.at, one JSON decoder for collect, and the HF folder
written as the export's batches arrive instead of re-read from its Parquet shards.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

REFERENCE = """
import resource, sys, time
import polars as pl
t = time.perf_counter()
n = pl.read_ndjson(sys.argv[1], infer_schema_length=1000, ignore_errors=True).height
print(time.perf_counter() - t, n, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def reset_peak() -> bool:
    """Reset this process's peak RSS (Linux: clear_refs 5); False where that is refused."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_mb() -> float:
    """This process's peak RSS since the last :func:`reset_peak` (or since start), in MB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def generate(path: Path, rows: int, seed: int = 0, chunk: int = 50_000) -> None:
    """Seeded synthetic Alpaca rows (see the module docstring)."""
    rng = np.random.default_rng(seed)
    vocab = np.array([f"w{i:04d}{'abcdefgh'[i % 8]}" for i in range(8000)])
    made = 0
    with open(path, "w", encoding="utf-8") as f:
        while made < rows:
            n = min(chunk, rows - made)
            ins = rng.integers(0, vocab.size, size=(n, 40))
            out = rng.integers(0, vocab.size, size=(n, 110))
            kind = rng.random(n)
            lines = []
            for i in range(n):
                j = made + i
                if kind[i] < 0.05 and i > 0:  # exact duplicate of an earlier row (case and spacing differ)
                    src = int(rng.integers(0, i))
                    a, b = " ".join(vocab[ins[src]]).upper(), "  ".join(vocab[out[src]])
                elif kind[i] < 0.10 and i > 0:  # near duplicate: one response word in 40 changed
                    src = int(rng.integers(0, i))
                    o = out[src].copy()
                    o[rng.integers(0, o.size, size=o.size // 40)] = rng.integers(0, vocab.size)
                    a, b = " ".join(vocab[ins[src]]), " ".join(vocab[o])
                else:
                    a, b = " ".join(vocab[ins[i]]), " ".join(vocab[out[i]])
                if kind[i] > 0.999:
                    lines.append(json.dumps({"instruction": f"no answer {j}", "input": ""}) + "\n")
                else:
                    lines.append(json.dumps({"instruction": a, "input": "", "output": b}) + "\n")
            f.writelines(lines)
            made += n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--shard-size", type=int, default=50_000)
    ap.add_argument("--near-threshold", type=float, default=0.8)
    ap.add_argument("--dir", type=Path, default=None, help="work folder (default: a temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep the input and the run folder")
    ap.add_argument("--no-reference", action="store_true", help="skip the bare polars.read_ndjson")
    ap.add_argument("--lean-disk", action="store_true",
                    help="delete each step's input once the next step has read it (10M rows: about 47 GB "
                         "at the peak instead of 65)")
    args = ap.parse_args(argv)

    from flows.config import load_config
    from flows.pipeline import run_stage
    from flows.run_folder import RunFolder
    from pipelines.shards import atomic_write_parquet, list_shards, shard_path

    work = Path(args.dir or tempfile.mkdtemp(prefix="ingest-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    data = work / "input.jsonl"
    times: dict[str, float] = {}
    peaks: dict[str, float] = {}
    try:
        t = time.perf_counter()
        generate(data, args.rows)
        times["generate_input"] = time.perf_counter() - t
        print(f"input: {data} ({data.stat().st_size / 1e6:.0f} MB, {args.rows} rows)", flush=True)
        ref = None
        if not args.no_reference:
            out = subprocess.run([sys.executable, "-c", REFERENCE, str(data)], capture_output=True, text=True,
                                 check=True)
            secs, n, rss = out.stdout.split()
            ref = (float(secs), float(rss))
            print(f"reference polars.read_ndjson: {float(secs):.1f}s ({n} rows)", flush=True)
        child_rss_before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss

        steps = [
            {"dedup": {"exact": True, "near": True, "near_threshold": args.near_threshold}},
            {"threshold": {"column": "score_len", "min": 20}},
            {"top_k": {"column": "score_len", "fraction": 0.9}},
        ]
        cfg = load_config(overrides=[
            "generate.taxonomy.enabled=false", "generate.text.enabled=false", f"generate.inputs=[{data}]",
            "score.scores=[]", f"run.shard_size={args.shard_size}", f"run.out_dir={work / 'runs'}",
            "select.steps=" + json.dumps(steps),
        ])
        run = RunFolder(cfg.run_dir())
        run.claim(cfg.fingerprint(), cfg.model_dump_json())
        records = []

        def step(name: str, fn):
            reset_peak()
            t = time.perf_counter()
            out = fn()
            times[name] = time.perf_counter() - t
            peaks[name] = peak_mb()
            return out

        def score_len() -> None:  # model-free score: a length column, shard by shard
            for i, p in enumerate(list_shards(run.examples)):
                shard = pl.read_parquet(p)
                atomic_write_parquet(shard.with_columns(
                    pl.col("response").str.count_matches(r"\S+").cast(pl.Float64).alias("score_len")),
                    shard_path(run.scored, i))

        def spent(path: Path) -> None:  # outside the timed steps; stage records keep the content keys
            if args.lean_disk and path.is_dir():
                shutil.rmtree(path)
            elif args.lean_disk:
                path.unlink()

        records.append(step("collect", lambda: run_stage("collect", run, cfg)))
        spent(data)
        step("score_len (no model)", score_len)
        spent(run.examples)
        records.append(step("select (dedup exact+near, threshold, top_k)", lambda: run_stage("select", run, cfg)))
        spent(run.scored)
        records.append(step("export", lambda: run_stage("export", run, cfg)))
        total = sum(times[name] for name in peaks)  # the four steps (not the input, nor --lean-disk's deletes)

        col, sel = records[0], records[1]
        dedup = sel["steps"][0]
        print(f"collect: rows_out={col['rows_out']} rejects={col['rejects']} shards={col['shards']}")
        print(f"select: {dedup['detail']} kept={sel['rows_out']} of {sel['rows_in']}")
        for name, secs in times.items():
            print(f"{name}: {secs:.1f}s" + (f" (peak RSS of the step {peaks[name]:.0f} MB)" if name in peaks else ""))
        for name, mb in peaks.items():
            print(f"rss_{name.split()[0]}_mb={mb:.0f}")
        if ref is not None:
            print(f"reference_read_ndjson_s={ref[0]:.1f}")
            print(f"reference_rss_mb={ref[1]:.0f}")
        print(f"pipeline_s={total:.1f}")
        children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        peak = max(max(peaks.values()), (children if children != child_rss_before else 0) / 1024)
        print(f"rows_per_s={args.rows / total:.0f}")
        print(f"peak_rss_mb={peak:.0f}")
    finally:
        if not args.keep and args.dir is None:
            shutil.rmtree(work, ignore_errors=True)
        elif args.keep:
            print(f"kept: {work}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
