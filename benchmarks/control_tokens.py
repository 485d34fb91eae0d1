"""Selection vs conditioning (Korbak et al. 2023) on a planted quality signal, embedded model.

Context-QA rows are split into train and held-out rows with disjoint passages. Half the training
rows get a wrong answer (another row's answer) and score 0, the rest keep theirs and score 1 --
a perfect judge, so the comparison is about what training does with the labels:

* ``all``: train on every row, no tags (no selection);
* ``filter``: train on the score-1 rows only (selection);
* ``control``: train on every row, prompts prefixed ``<|good|>``/``<|bad|>`` by the score
  (``pipelines.finetune.control``); held-out loss asked with ``<|good|>``, and with ``<|bad|>``
  to see that the tokens condition anything.

Every run has the same steps and batch size (the same compute). Held-out loss is the mean NLL per
answer token of the *correct* held-out answers (lower is better).

    python -m benchmarks.control_tokens                                  # 160 rows, 40 steps, lora
    python -m benchmarks.control_tokens --rows 32 --heldout 16 --steps 4 --model tiny   # smoke run

The last line is ``control_minus_filter=<held-out loss difference>`` (negative: conditioning won).
"""

from __future__ import annotations

import argparse
import random
import time

from benchmarks.finetune import DEFAULT_DATA, split_rows


def planted(rows: list[dict], seed: int) -> list[dict]:
    """Half the rows (seeded) get another row's answer and score 0; the rest score 1."""
    rng = random.Random(seed)
    bad = set(rng.sample(range(len(rows)), len(rows) // 2))
    answers = [r["answer"] for r in rows]
    out = []
    for i, r in enumerate(rows):
        wrong = answers[(i + 1 + rng.randrange(len(rows) - 1)) % len(rows)] if i in bad else r["answer"]
        out.append({**r, "answer": wrong, "score_planted": 0.0 if i in bad else 1.0})
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.control_tokens",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="context-QA JSONL (context, question, answer)")
    ap.add_argument("--rows", type=int, default=160, help="training rows (half get a wrong answer)")
    ap.add_argument("--heldout", type=int, default=40, help="held-out rows (passages never trained on)")
    ap.add_argument("--steps", type=int, default=40, help="optimizer steps per run")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--method", default="lora", help="fine-tuning method (pipelines.finetune.methods)")
    ap.add_argument("--lr", type=float, default=None, help="learning rate (default: the method's)")
    ap.add_argument("--model", default="embedded", help="embedded, tiny or a local folder")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = ap.parse_args(argv)

    import polars as pl
    import torch

    from pipelines.finetune import train_model
    from pipelines.finetune.control import BAD, control_labels
    from pipelines.finetune.evaluate import heldout_loss
    from pipelines.finetune.prompt_tags import mark
    from pipelines.llm.embedded import load_model_and_tokenizer
    from pipelines.schema import make_example, to_messages, to_table

    if args.threads:
        torch.set_num_threads(args.threads)
    train_rows, held_rows = split_rows(args.data, args.rows, args.heldout)
    rows = planted(train_rows, args.seed)
    table = to_table([make_example(r["question"], r["answer"], context=r["context"]) for r in rows])
    table = table.with_columns(pl.Series("score_planted", [r["score_planted"] for r in rows]))
    table = table.with_columns(control_labels(table, "score_planted", threshold=0.5))
    held = [{"messages": to_messages(r["question"], r["context"], r["answer"])} for r in held_rows]
    held_bad = [{"messages": mark(h["messages"], BAD, "prefix")} for h in held]
    kw = {"batch_size": args.batch_size, "max_length": args.max_length}

    base, tok = load_model_and_tokenizer(args.model)
    results = {"untrained": heldout_loss(base, tok, held, **kw)}
    runs = {
        "all": (table, False),
        "filter": (table.filter(pl.col("score_planted") > 0.5), False),
        "control": (table, True),
    }
    for name, (rows_in, control) in runs.items():
        t0 = time.perf_counter()
        run_tok = load_model_and_tokenizer(args.model)[1]  # a fresh tokenizer: control adds tokens
        model, metrics = train_model(
            base,
            run_tok,
            rows_in,
            args.method,
            max_steps=args.steps,
            learning_rate=args.lr,
            seed=args.seed,
            control_tokens=control,
            **kw,
        )
        results[name] = heldout_loss(model, run_tok, held, control_tokens=control, **kw)
        if control:
            results["control_asked_bad"] = heldout_loss(model, run_tok, held_bad, **kw)
        print(
            f"{name:8s} rows={rows_in.height:4d} steps={metrics['steps']} train_loss={metrics['train_loss']:.3f} "
            f"heldout_loss={results[name]:.4f} ({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
    for name, loss in results.items():
        print(f"heldout_loss[{name}]={loss:.4f}")
    diff = results["control"] - results["filter"]
    print(f"control_minus_filter={diff:.4f}")
    return results


if __name__ == "__main__":
    main()
