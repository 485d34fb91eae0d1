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
from pipelines.scoring import encode, score_encoded


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=256, help="real rows to score")
    ap.add_argument("--max-length", type=int, default=512, help="truncate rows to this many tokens")
    ap.add_argument("--token-budget", type=int, default=4096, help="tokens per batch (rows x longest)")
    ap.add_argument("--model", default="embedded", help="embedded, tiny or a local model folder")
    ap.add_argument("--repeats", type=int, default=2, help="timed repeats of each side (best is kept)")
    args = ap.parse_args(argv)
    torch.manual_seed(0)

    model, tok = load_model_and_tokenizer(args.model, device="cpu")
    rows = read_jsonl(shared_datasets() / "instruct_general" / "t0_selected_combined.part00.jsonl", args.rows)
    reqs = [LossRequest([{"role": "user", "content": r["prompt"]}], r["completion"]) for r in rows]
    items = [encode(tok, r, args.max_length) for r in reqs]
    n_tokens = sum(it.length for it in items)

    def run_scorer() -> float:
        t = time.perf_counter()
        score_encoded(model, items, tok.pad_token_id, token_budget=args.token_budget)
        return n_tokens / (time.perf_counter() - t)

    seq = 256
    batch = max(1, args.token_budget // seq)
    n_batches = max(1, n_tokens // (batch * seq))
    ids = torch.randint(0, len(tok), (batch, seq))

    @torch.inference_mode()
    def run_plain() -> float:
        t = time.perf_counter()
        for _ in range(n_batches):
            model(input_ids=ids)
        return n_batches * batch * seq / (time.perf_counter() - t)

    run_plain()  # warm-up (allocator, kernels)
    scorer = max(run_scorer() for _ in range(args.repeats))
    plain = max(run_plain() for _ in range(args.repeats))
    lengths = sorted(it.length for it in items)
    print(f"model={args.model} rows={len(items)} tokens={n_tokens} length min/median/max="
          f"{lengths[0]}/{lengths[len(lengths) // 2]}/{lengths[-1]} threads={torch.get_num_threads()}")
    print(f"scorer_tokens_per_s={scorer:.1f}")
    print(f"plain_forward_tokens_per_s={plain:.1f} (batch {batch} x {seq} random ids)")
    print(f"ratio={scorer / plain:.3f}")


if __name__ == "__main__":
    main()
