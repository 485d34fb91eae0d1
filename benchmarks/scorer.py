"""Scorer throughput vs a plain forward pass, same model, same process.

    python -m benchmarks.scorer [--rows 256] [--max-length 512] [--model embedded]

Scorer: real variable-length rows (T0 prompt/completion pairs from ../shared/datasets/instruct_general)
rendered with the chat template, length-sorted, batched by token budget, prompt masked.
Baseline: plain ``model(input_ids)`` on fixed-length random ids (no padding at all), batch of the
same token budget. Both count real (non-pad) tokens per second. Last line: ratio=<scorer/baseline>.
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.common import read_jsonl, shared_datasets
from pipelines.llm.base import LossRequest
from pipelines.llm.embedded import load_model_and_tokenizer
from pipelines.llm.nll import encode, score_encoded


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=256, help="real rows to score")
    ap.add_argument("--max-length", type=int, default=512, help="truncate rows to this many tokens")
    ap.add_argument("--token-budget", type=int, default=4096, help="tokens per batch (rows x longest)")
    ap.add_argument("--model", default="embedded", help="embedded, tiny or a local model folder")
    ap.add_argument("--repeats", type=int, default=2, help="timed repeats of each side (best is kept)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="model weights dtype")
    ap.add_argument("--random-init", metavar="CONFIG_DIR",
                    help="random weights from this model folder's config.json and tokenizer (speed only)")
    ap.add_argument("--data", help="T0-style JSONL with prompt/completion (default: the shared datasets)")
    args = ap.parse_args(argv)
    torch.manual_seed(0)

    dtype = getattr(torch, args.dtype)
    if args.random_init:
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(args.random_init)
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(args.random_init), dtype=dtype)
        model = model.to(args.device).eval()
    else:
        model, tok = load_model_and_tokenizer(args.model, device=args.device, dtype=dtype)
    data = args.data or shared_datasets() / "instruct_general" / "t0_selected_combined.part00.jsonl"
    rows = read_jsonl(data, args.rows)
    reqs = [LossRequest([{"role": "user", "content": r["prompt"]}], r["completion"]) for r in rows]
    items = [encode(tok, r, args.max_length) for r in reqs]
    n_tokens = sum(it.length for it in items)

    def run_scorer() -> float:
        t = time.perf_counter()
        score_encoded(model, items, tok.pad_token_id, token_budget=args.token_budget)
        _sync()
        return n_tokens / (time.perf_counter() - t)

    seq = 256
    batch = max(1, args.token_budget // seq)
    n_batches = max(1, n_tokens // (batch * seq))
    ids = torch.randint(0, len(tok), (batch, seq), device=args.device)

    def _sync() -> None:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    @torch.inference_mode()
    def run_plain() -> float:
        t = time.perf_counter()
        for _ in range(n_batches):
            model(input_ids=ids)
        _sync()
        return n_batches * batch * seq / (time.perf_counter() - t)

    run_plain()  # warm-up (allocator, kernels)
    scorer = max(run_scorer() for _ in range(args.repeats))
    plain = max(run_plain() for _ in range(args.repeats))
    lengths = sorted(it.length for it in items)
    print(f"model={args.random_init or args.model} device={args.device} dtype={args.dtype} rows={len(items)} tokens={n_tokens} length min/median/max="
          f"{lengths[0]}/{lengths[len(lengths) // 2]}/{lengths[-1]} threads={torch.get_num_threads()}")
    print(f"scorer_tokens_per_s={scorer:.1f}")
    print(f"plain_forward_tokens_per_s={plain:.1f} (batch {batch} x {seq} random ids)")
    print(f"ratio={scorer / plain:.3f}")


if __name__ == "__main__":
    main()
