"""Generation throughput on CPU: the hf backend's two engines at batch 1 and batched, same run, same prompts.

    python -m benchmarks.generation [--prompts 16] [--batch 16] [--max-tokens 64] [--threads 1,2]

Rows, for each thread count in ``--threads`` (torch threads for hf, intra-op threads for ct2):
hf fp32 batch 1 (the baseline), hf batched, ct2 (CTranslate2 int8) batch 1 and batched. Prompts
are real generator prompts (Bonito chat mode over data/passages.jsonl, several task types),
sampled at temperature 0.7 like a generation run. Tokens/s counts generated tokens (the output
re-tokenised; padding and the end token not counted) over wall time, model loaded, converted and
warmed up first. When llama-cpp-python is installed, the same prompts also run through the
``llamacpp`` backend single-stream (the embedded GGUF).

Last line: ``speedup=<default path / hf fp32 batch 1>``, both at the default thread count (torch's
at start, or ``--default-threads``). The default path is what ``HFBackend.load(model)`` generates
with: engine "auto" (ct2 for the embedded model on CPU when ctranslate2 is installed, else hf),
batched at ``--batch``.
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
from generators.bonito import TASK_TYPES, chat_prompt
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

    cpp = LlamaCppBackend("embedded", n_threads=torch.get_num_threads())
    count = lambda text: len(cpp.llm.tokenize(text.encode("utf-8"), add_bos=False))  # noqa: E731
    prompts = bench_prompts(args.prompts)
    cpp.generate(prompts[:1], Sampling(max_tokens=4))
    rate, _, _ = tokens_per_s(
        cpp, prompts, Sampling(temperature=0.7, top_p=0.95, max_tokens=args.max_tokens), count
    )
    print(f"llamacpp_rate={rate}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--prompts", type=int, default=16, help="prompts per measurement (same prompts for every side)"
    )
    ap.add_argument("--batch", type=int, default=16, help="generation batch size of the batched sides")
    ap.add_argument("--max-tokens", type=int, default=64, help="max new tokens per prompt")
    ap.add_argument("--model", default="embedded", help="embedded, tiny or a local model folder")
    ap.add_argument(
        "--baseline-prompts",
        type=int,
        default=None,
        help="prompts for the slow batch-1 side (default: --prompts, at most 8)",
    )
    ap.add_argument(
        "--threads",
        default="1,2",
        help="comma-separated thread counts to measure (torch threads for hf, intra threads for ct2); "
        "on a busy shared machine 1 can be faster",
    )
    ap.add_argument(
        "--default-threads",
        type=int,
        default=None,
        help="thread count of the speedup line (default: torch's at start, i.e. what a run uses "
        "when model.threads is unset; must be one of --threads)",
    )
    ap.add_argument(
        "--engines",
        default="hf,ct2",
        help="engines to measure (hf, ct2); the hf batch-1 baseline always runs",
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
        help="generation dtype of the batched side, e.g. bfloat16 (HFBackend generation_dtype; "
        "default none = the fp32 model); batch 1 is then measured with both",
    )
    ap.add_argument("--llamacpp-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--no-llamacpp", action="store_true", help="skip llama.cpp even when installed")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    if args.llamacpp_only:
        torch.set_num_threads(int(args.threads.split(",")[0]))
        llamacpp_only(args)
        return

    from pipelines.llm.hf import HFBackend, resolve_generation_engine

    threads = [int(t) for t in args.threads.split(",") if t.strip()]
    default_threads = args.default_threads or torch.get_num_threads()
    if default_threads not in threads:
        default_threads = threads[0]
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    default_engine = resolve_generation_engine("auto", args.model, "cpu")
    if default_engine not in engines:
        engines.append(default_engine)

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
        f"model={args.model} dtype={next(llm.model.parameters()).dtype} threads={threads} "
        f"default_threads={default_threads} prompts={len(prompts)} (prompt tokens {lens[0]}-{lens[-1]}, "
        f"mean {sum(lens) / len(lens):.0f}) max_tokens={args.max_tokens} ctranslate2={ct2_version} "
        f"default engine={default_engine}"
    )

    gen_dtype = None if args.generation_dtype in ("none", "float32") else args.generation_dtype
    rates: dict[tuple, float] = {}

    def measure(engine: str, batch: int, dtype: str | None, ps: list, th: int) -> float:
        torch.set_num_threads(th)
        llm.generation_engine, llm.ct2_threads = engine, th
        llm.generation_batch_size, llm.generation_dtype = batch, dtype
        # warm-up (allocator, kernels, the dtype copy; ct2: conversion, cached after the first run)
        llm.generate(ps[:2], Sampling(max_tokens=4))
        rate, n, dt = tokens_per_s(llm, ps, sampling, count)
        kind = (dtype or "float32") if engine == "hf" else (llm.ct2_quantization or "float32")
        print(
            f"threads={th} {engine:<3} batch={batch:<3} {kind:<8}: {rate:6.1f} tok/s "
            f"({n} tokens in {dt:.1f} s, {len(ps)} prompts)",
            flush=True,
        )
        rates[engine, batch, dtype, th] = rate
        return rate

    for th in threads:
        # the baseline: hf fp32, one prompt at a time
        measure("hf", 1, None, prompts[:base_n], th)
        if "hf" in engines:
            if gen_dtype:
                measure("hf", 1, gen_dtype, prompts[:base_n], th)
            measure("hf", args.batch, gen_dtype, prompts, th)
        if "ct2" in engines:
            measure("ct2", 1, None, prompts[:base_n], th)
            measure("ct2", args.batch, None, prompts, th)
        for eng in engines:
            key = (eng, args.batch, gen_dtype if eng == "hf" else None, th)
            if key in rates:
                print(f"threads={th} {eng} batch={args.batch} vs hf batch=1: {rates[key] / rates['hf', 1, None, th]:.2f}x")
    b1 = rates["hf", 1, None, default_threads]
    bb = rates[default_engine, args.batch, gen_dtype if default_engine == "hf" else None, default_threads]
    print(f"default path: {default_engine} batch={args.batch} threads={default_threads}; baseline: hf batch=1 threads={default_threads}")

    if (
        not args.no_llamacpp
        and importlib.util.find_spec("llama_cpp") is not None
        and args.model == "embedded"
    ):
        # In a child process: a broken llama.cpp build can crash (it segfaulted here once), and
        # that must not take the hf figures and the speedup line down with it.
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.generation",
            "--llamacpp-only",
            "--prompts",
            str(base_n),
            "--max-tokens",
            str(args.max_tokens),
            "--threads",
            str(default_threads),
        ]
        res = subprocess.run(cmd, capture_output=True, text=True)
        rate = [ln.split("=", 1)[1] for ln in res.stdout.splitlines() if ln.startswith("llamacpp_rate=")]
        if res.returncode == 0 and rate:
            lc = float(rate[0])
            print(f"llama.cpp single-stream: {lc:.1f} tok/s ({base_n} prompts)")
            print(f"default path ({default_engine} batch={args.batch}) vs llama.cpp single-stream: {bb / lc:.2f}x")
        else:
            print(f"llama.cpp: failed (exit code {res.returncode}) - skipped")
    else:
        print("llama.cpp: not installed (pip install '.[llamacpp]') - skipped")
    print(f"speedup={bb / b1:.2f}")


if __name__ == "__main__":
    main()
