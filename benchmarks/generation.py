"""Generation throughput on CPU: hf fp32 one prompt at a time against CTranslate2 over thread layouts and batch sizes.

    python -m benchmarks.generation [--prompts 32] [--batches 8,16] [--layouts 1x1,1x2,2x1] [--max-tokens 64]

Rows:

* the baseline: hf (transformers) fp32, batch 1, torch given every core (``--cores``);
* ct2 (CTranslate2, int8) for each layout ``INTERxINTRA`` (batches at once x threads per batch) and
  each batch size in ``--batches``; default layouts for n cores: 1x1, 1xn, nx1;
* the default path, what ``HFBackend.load(model)`` generates with: engine "auto" (ct2 for the
  embedded model on CPU when ctranslate2 is installed, else hf), at ``--batch`` and the layout
  ``pipelines.llm.ct2.thread_layout`` picks for ``--cores`` (one single-threaded batch per core);
* with ``--engines hf,ct2``: hf batched at ``--batch``.

Each row gives tokens/s, tokens/s per core used, and its share of the ceiling: the best ct2 row
(the same engine at its best batch size and layout, measured in this run). Prompts are real
generator prompts (Bonito chat mode over data/passages.jsonl, several task types) sampled at
temperature 0.7 like a generation run. Tokens/s counts generated tokens (the output
re-tokenised; padding and the end token not counted) over wall time, model loaded, converted and
warmed up first. A layout runs several batches at once only when a call has that many batches:
``--prompts`` should be at least inter x batch. When llama-cpp-python is installed, the same
prompts also run through the ``llamacpp`` backend single-stream (the embedded GGUF).

Last line: ``speedup=<default path / hf fp32 batch 1>``, both on ``--cores`` cores.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time

import torch

from benchmarks.common import REPO
from generators.bonito_chat import chat_prompt
from generators.bonito_template import TASK_TYPES
from pipelines.llm.base import Sampling


def bench_prompts(n: int) -> list:
    passages = [
        json.loads(line)["text"] for line in (REPO / "data" / "passages.jsonl").open(encoding="utf-8")
    ]
    types = list(TASK_TYPES)
    return [chat_prompt(passages[i % len(passages)], types[i % len(types)]) for i in range(n)]


def tokens_per_s(llm, prompts, sampling, count) -> tuple[float, int, float]:
    t = time.perf_counter()
    texts = llm.generate(prompts, sampling)
    dt = time.perf_counter() - t
    n = sum(count(x) for x in texts)
    return n / dt, n, dt


def llamacpp_only(args) -> None:
    """The llama.cpp side alone (run as a child process by main); prints llamacpp_rate=<tok/s>."""
    from pipelines.llm.llamacpp_backend import LlamaCppBackend

    cpp = LlamaCppBackend("embedded", n_threads=args.cores)
    count = lambda text: len(cpp.llm.tokenize(text.encode("utf-8"), add_bos=False))  # noqa: E731
    prompts = bench_prompts(args.prompts)
    cpp.generate(prompts[:1], Sampling(max_tokens=4))
    rate, _, _ = tokens_per_s(
        cpp, prompts, Sampling(temperature=0.7, top_p=0.95, max_tokens=args.max_tokens), count
    )
    print(f"llamacpp_rate={rate}")


def parse_layouts(text: str, cores: int) -> list[tuple[int, int]]:
    """``"1x1,2x1"`` -> [(1, 1), (2, 1)]; empty: 1x1, 1xn, nx1 for n cores (deduplicated)."""
    if not text:
        return list(dict.fromkeys([(1, 1), (1, cores), (cores, 1)]))
    return [tuple(int(x) for x in part.lower().split("x")) for part in text.split(",") if part.strip()]  # type: ignore[misc]


def main(argv: list[str] | None = None) -> None:
    from pipelines.llm.ct2 import available_cores, thread_layout

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--prompts", type=int, default=32, help="prompts per ct2 measurement (same prompts for every row)"
    )
    ap.add_argument("--batches", default="8,16", help="comma-separated ct2 batch sizes for the layout rows")
    ap.add_argument(
        "--batch", type=int, default=16, help="batch size of the default path (HFBackend's default: 16)"
    )
    ap.add_argument(
        "--layouts",
        default="",
        help="comma-separated ct2 layouts INTERxINTRA (default: 1x1,1xN,Nx1 for N cores)",
    )
    ap.add_argument(
        "--cores",
        type=int,
        default=None,
        help="cores for the baseline and the default path (default: every core this process may run on)",
    )
    ap.add_argument("--max-tokens", type=int, default=64, help="max new tokens per prompt")
    ap.add_argument("--model", default="embedded", help="embedded, tiny or a local model folder")
    ap.add_argument(
        "--baseline-prompts",
        type=int,
        default=None,
        help="prompts for the slow batch-1 side (default: --prompts, at most 8)",
    )
    ap.add_argument(
        "--engines",
        default="ct2",
        help="engines for the batched rows (hf, ct2); the hf batch-1 "
        "baseline and the default path always run",
    )
    ap.add_argument(
        "--ct2-spread",
        type=int,
        default=None,
        help="ct2_max_prompt_spread (default: HFBackend's); -1 never splits a batch",
    )
    ap.add_argument(
        "--generation-dtype",
        default="none",
        help="hf batched row's generation dtype, e.g. bfloat16 (default none = the fp32 model)",
    )
    ap.add_argument("--llamacpp-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--no-llamacpp", action="store_true", help="skip llama.cpp even when installed")
    args = ap.parse_args(argv)
    args.cores = args.cores or available_cores()
    torch.manual_seed(0)
    if args.llamacpp_only:
        torch.set_num_threads(args.cores)
        llamacpp_only(args)
        return

    from pipelines.llm.hf import HFBackend, resolve_generation_engine

    cores = args.cores
    layouts = parse_layouts(args.layouts, cores)
    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    default_engine = resolve_generation_engine("auto", args.model, "cpu")
    default_layout = thread_layout(cores)

    llm = HFBackend.load(args.model, device="cpu", generation_engine="hf")
    if args.ct2_spread is not None:
        llm.ct2_max_prompt_spread = None if args.ct2_spread < 0 else args.ct2_spread
    tok = llm.tokenizer

    def count(text: str) -> int:
        return len(tok(text, add_special_tokens=False)["input_ids"])

    prompts = bench_prompts(args.prompts)
    base_n = args.baseline_prompts or min(args.prompts, 8)
    sampling = Sampling(temperature=0.7, top_p=0.95, max_tokens=args.max_tokens, seed=0)
    ct2_version = "not installed"
    if importlib.util.find_spec("ctranslate2"):
        import ctranslate2

        ct2_version = ctranslate2.__version__
    lens = sorted(count(llm._prompt_text(p)) for p in prompts)
    print(
        f"model={args.model} cores={cores} layouts={','.join(f'{a}x{b}' for a, b in layouts)} batches={batches} "
        f"prompts={len(prompts)} (prompt tokens {lens[0]}-{lens[-1]}, mean {sum(lens) / len(lens):.0f}) "
        f"max_tokens={args.max_tokens} ctranslate2={ct2_version} default engine={default_engine} "
        f"default layout={default_layout[0]}x{default_layout[1]}"
    )

    gen_dtype = None if args.generation_dtype in ("none", "float32") else args.generation_dtype
    rows: dict[str, tuple[float, int]] = {}  # label -> (tok/s, cores used)

    def measure(label: str, engine: str, batch: int, layout: tuple[int, int], ps: list, dtype=None) -> float:
        used = layout[0] * layout[1]
        torch.set_num_threads(used)  # hf: torch's threads; ct2: the layout below
        llm.generation_engine, llm.generation_batch_size, llm.generation_dtype = engine, batch, dtype
        if engine == "ct2":
            eng = llm.ct2_engine()
            eng.inter_threads, eng.intra_threads = layout
        # warm-up (allocator, kernels, the dtype copy; ct2: conversion, cached after the first run)
        llm.generate(ps[:2], Sampling(max_tokens=4))
        rate, n, dt = tokens_per_s(llm, ps, sampling, count)
        print(
            f"{label:<34}: {rate:6.1f} tok/s {rate / used:6.1f} tok/s/core ({n} tokens in {dt:.1f} s, "
            f"{len(ps)} prompts)",
            flush=True,
        )
        rows[label] = rate, used
        return rate

    def ct2_label(layout, batch) -> str:
        kind = llm.ct2_quantization or "float32"
        return f"ct2 {kind} {layout[0]}x{layout[1]} batch={batch}"

    b1 = measure(f"hf float32 batch=1 threads={cores}", "hf", 1, (1, cores), prompts[:base_n])
    if "hf" in engines:
        measure(
            f"hf {gen_dtype or 'float32'} batch={args.batch} threads={cores}",
            "hf",
            args.batch,
            (1, cores),
            prompts,
            gen_dtype,
        )
    ct2_rows = []
    if ct2_version != "not installed" and ("ct2" in engines or default_engine == "ct2"):
        for layout in layouts if "ct2" in engines else []:
            for batch in batches:
                ct2_rows.append(ct2_label(layout, batch))
                measure(ct2_rows[-1], "ct2", batch, layout, prompts)
    if default_engine == "ct2":
        label = ct2_label(default_layout, args.batch)
        bb = rows[label][0] if label in rows else measure(label, "ct2", args.batch, default_layout, prompts)
        ct2_rows.append(label)
    else:
        label = f"hf float32 batch={args.batch} threads={cores}"
        bb = rows[label][0] if label in rows else measure(label, "hf", args.batch, (1, cores), prompts)
    if ct2_rows:
        best = max(ct2_rows, key=lambda k: rows[k][0])
        ceiling = rows[best][0]
        print(f"ceiling: {best} {ceiling:.1f} tok/s ({ceiling / rows[best][1]:.1f} tok/s/core)")
        for k, (rate, used) in rows.items():
            print(
                f"  {k:<34} {rate:6.1f} tok/s {rate / used:6.1f}/core  {100 * rate / ceiling:5.1f}% of ceiling"
            )
    print(f"default path: {label}; baseline: hf float32 batch=1 threads={cores}")

    if (
        not args.no_llamacpp
        and importlib.util.find_spec("llama_cpp") is not None
        and args.model == "embedded"
    ):
        # In a child process: a broken llama.cpp build can crash (it segfaulted here once), and
        # that must not take the other figures and the speedup line down with it.
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.generation",
            "--llamacpp-only",
            "--prompts",
            str(base_n),
            "--max-tokens",
            str(args.max_tokens),
            "--cores",
            str(cores),
        ]
        res = subprocess.run(cmd, capture_output=True, text=True)
        rate = [ln.split("=", 1)[1] for ln in res.stdout.splitlines() if ln.startswith("llamacpp_rate=")]
        if res.returncode == 0 and rate:
            lc = float(rate[0])
            print(f"llama.cpp single-stream: {lc:.1f} tok/s ({base_n} prompts)")
            print(f"default path vs llama.cpp single-stream: {bb / lc:.2f}x")
        else:
            print(f"llama.cpp: failed (exit code {res.returncode}) - skipped")
    else:
        print("llama.cpp: not installed (pip install '.[llamacpp]') - skipped")
    print(f"speedup={bb / b1:.2f}")


if __name__ == "__main__":
    main()
