"""Generation throughput on CPU: the hf backend at batch 1 vs batched, same run, same prompts.

    python -m benchmarks.generation [--prompts 16] [--batch 16] [--max-tokens 64] [--threads 1]

Prompts are real generator prompts (Bonito chat mode over data/passages.jsonl, several task
types), sampled at temperature 0.7 like a generation run. Tokens/s counts generated tokens
(the output re-tokenised; padding and the end token not counted) over wall time, model loaded
and warmed up first. When llama-cpp-python is installed, the same prompts also run through the
``llamacpp`` backend single-stream (the embedded GGUF), and the hf batched figure is compared
with it. Last line: ``speedup=<hf batched (generation dtype) / hf batch 1 (fp32 default)>``.
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
    ap.add_argument("--batch", type=int, default=16, help="hf generation batch size for the batched side")
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
        type=int,
        default=None,
        help="torch CPU threads (default: torch's; on a busy shared machine 1 can be faster)",
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
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.llamacpp_only:
        llamacpp_only(args)
        return

    from pipelines.llm.hf import HFBackend

    llm = HFBackend.load(args.model, device="cpu")
    tok = llm.tokenizer

    def count(text: str) -> int:
        return len(tok(text, add_special_tokens=False)["input_ids"])

    prompts = bench_prompts(args.prompts)
    base_n = args.baseline_prompts or min(args.prompts, 8)
    sampling = Sampling(temperature=0.7, top_p=0.95, max_tokens=args.max_tokens, seed=0)
    print(
        f"model={args.model} dtype={next(llm.model.parameters()).dtype} threads={torch.get_num_threads()} "
        f"prompts={len(prompts)} max_tokens={args.max_tokens}"
    )

    gen_dtype = None if args.generation_dtype in ("none", "float32") else args.generation_dtype

    def measure(batch: int, dtype: str | None, ps: list) -> float:
        llm.generation_batch_size, llm.generation_dtype = batch, dtype
        llm.generate(ps[:2], Sampling(max_tokens=4))  # warm-up (allocator, kernels, the dtype copy)
        rate, n, dt = tokens_per_s(llm, ps, sampling, count)
        print(
            f"hf batch={batch} {dtype or 'float32'}: {rate:.1f} tok/s ({n} tokens in {dt:.1f} s, {len(ps)} prompts)"
        )
        return rate

    b1 = measure(1, None, prompts[:base_n])  # the baseline: the default backend, one prompt at a time
    if gen_dtype:
        measure(1, gen_dtype, prompts[:base_n])
    bb = measure(args.batch, gen_dtype, prompts)

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
            str(torch.get_num_threads()),
        ]
        res = subprocess.run(cmd, capture_output=True, text=True)
        rate = [ln.split("=", 1)[1] for ln in res.stdout.splitlines() if ln.startswith("llamacpp_rate=")]
        if res.returncode == 0 and rate:
            lc = float(rate[0])
            print(f"llama.cpp single-stream: {lc:.1f} tok/s ({base_n} prompts)")
            print(
                f"hf batch={args.batch} {gen_dtype or 'float32'} vs llama.cpp single-stream: {bb / lc:.2f}x"
            )
        else:
            print(f"llama.cpp: failed (exit code {res.returncode}) - skipped")
    else:
        print("llama.cpp: not installed (pip install '.[llamacpp]') - skipped")
    print(f"speedup={bb / b1:.2f}")


if __name__ == "__main__":
    main()
