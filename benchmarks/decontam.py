"""Decontamination speed: mark 100k rows against a 10k-row eval set (word 13-grams).

    python -m benchmarks.decontam                      # 100k rows vs 10k eval rows
    python -m benchmarks.decontam --rows 20000 --eval-rows 2000

Synthetic, seeded text (Zipf-distributed words from a 20k vocabulary; rows of 30-150 words in
instruction/response, eval rows of 20-80 words); every 100th row has an eval row pasted into its
instruction, so the benchmark also checks that exactly those rows are caught. Times building
the index and marking in shards of ``--shard-size`` rows (as the select stage streams them).
Last line: rows_per_s= (rows marked per second, marking only).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import polars as pl
from instruct_selectors.decontam import COLUMN, build_index, mark


def _vocabulary(rng: np.random.Generator, size: int) -> np.ndarray:
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    lengths = rng.integers(2, 10, size)
    return np.array(["".join(rng.choice(letters, n)) for n in lengths])


def _texts(rng: np.random.Generator, vocab: np.ndarray, n: int, lo: int, hi: int) -> list[str]:
    ranks = np.minimum(rng.zipf(1.2, size=n * hi), len(vocab)) - 1
    lengths = rng.integers(lo, hi, n)
    out, pos = [], 0
    for length in lengths:
        out.append(" ".join(vocab[ranks[pos : pos + length]]))
        pos += length
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.decontam", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--eval-rows", type=int, default=10_000)
    ap.add_argument("--n", type=int, default=13)
    ap.add_argument("--shard-size", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    vocab = _vocabulary(rng, 20_000)
    evals = _texts(rng, vocab, args.eval_rows, 20, 80)
    instructions = _texts(rng, vocab, args.rows, 30, 150)
    responses = _texts(rng, vocab, args.rows, 30, 150)
    planted = set(range(0, args.rows, 100))
    for i in planted:
        instructions[i] = f"{instructions[i]} {evals[i % len(evals)].upper()}, please."
    ids = [f"r{i}" for i in range(args.rows)]
    table = pl.DataFrame({"id": ids, "instruction": instructions, "context": [""] * args.rows,
                          "response": responses})
    eval_table = pl.DataFrame({"instruction": evals, "response": [""] * len(evals)})
    print(f"rows={args.rows} eval_rows={args.eval_rows} n={args.n} words/row~{np.mean([len(t.split()) for t in instructions[:1000]]) * 2:.0f}")

    t0 = time.perf_counter()
    index = build_index({"eval.jsonl": eval_table}, n=args.n)
    build_s = time.perf_counter() - t0
    print(f"build index: {build_s:.2f} s ({index.sizes()['eval.jsonl']} distinct n-grams)")

    t0 = time.perf_counter()
    found: set[int] = set()
    for start in range(0, args.rows, args.shard_size):
        shard = mark(table.slice(start, args.shard_size), index)
        found |= {start + i for i, v in enumerate(shard[COLUMN].to_list()) if v}
    mark_s = time.perf_counter() - t0
    print(f"mark: {mark_s:.2f} s; contaminated rows found={len(found)} planted={len(planted)} "
          f"missed={len(planted - found)} extra={len(found - planted)}")
    print(f"rows_per_s={args.rows / mark_s:.0f}")


if __name__ == "__main__":
    main()
