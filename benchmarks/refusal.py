"""R-Tuning (refusal-aware data) vs vanilla fine-tuning on closed-book QA: does the model that was
taught to say "I am unsure" answer the questions it does answer more accurately?

Closed-book QA rows come from ``../shared/datasets/context_qa/`` (default PubMedQA: question ->
yes/no/maybe, context dropped; with a one-word hint, since a 135M model otherwise writes a
sentence). Steps, all in one process on the same base model:

1. the base model answers the training questions (greedy); ``generators.refusal.transform_rows``
   judges each answer (``--metric``, ``--threshold``) and suffixes the row with the certainty
   question + "I am sure." / "I am unsure.";
2. two copies of the base model train ``--steps`` steps (``--method``): *vanilla* on the plain
   rows, *R-Tuning* on the suffixed rows;
3. both answer ``--eval-rows`` held-out questions (disjoint rows), judged the same way.
   R-Tuning: the answer is fed back with the certainty question and the model is unsure when
   " I am unsure." is likelier than " I am sure." (``pipelines.finetune.evaluate.evaluate_refusal``);
   its *answered accuracy* is the accuracy on the rows it is sure of. Vanilla was never taught
   to refuse, so it answers everything (as in the paper): its answered accuracy is its accuracy
   on all rows. Its own sure/unsure reading (never trained) is printed for reference.

    python -m benchmarks.refusal                                              # 400 train, 200 eval, 100 steps
    python -m benchmarks.refusal --train-rows 64 --eval-rows 48 --steps 16    # a few minutes on 2 cores

The last line is ``answered_accuracy_ratio=R-Tuning answered accuracy / vanilla accuracy``.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from benchmarks.common import shared_datasets

HINT = "Answer with one word: yes, no or maybe."


def load_rows(path: Path, hint: str) -> list[dict]:
    """Closed-book QA rows {question, context: "", answer} of a context-QA file."""
    from pipelines.finetune.evaluate import load_qa_rows

    rows = load_qa_rows(path)
    return [{"question": f"{r['question']}\n{hint}".strip(), "context": "", "answer": str(r["answer"])} for r in rows]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.refusal", description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=None,
                   help="context-QA JSONL (default: ../shared/datasets/context_qa/pubmedqa_flat.jsonl)")
    p.add_argument("--hint", default=HINT, help="appended to every question ('' for none)")
    p.add_argument("--train-rows", type=int, default=400, help="training rows")
    p.add_argument("--eval-rows", type=int, default=200, help="held-out rows (disjoint from training)")
    p.add_argument("--steps", type=int, default=100, help="optimizer steps per model")
    p.add_argument("--method", default="lora", help="training method (full, lora, lisa, hft, mezo)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the method's)")
    p.add_argument("--batch-size", type=int, default=8, help="rows per step (also generation batch)")
    p.add_argument("--metric", choices=("exact", "f1"), default="exact", help="how an answer is judged")
    p.add_argument("--threshold", type=float, default=1.0, help="score >= this counts as correct/known")
    p.add_argument("--max-tokens", type=int, default=32, help="tokens per greedy answer")
    p.add_argument("--model", default="embedded", help="'embedded', 'tiny' (smoke test) or a model folder")
    p.add_argument("--seed", type=int, default=0, help="seed for the row split and training")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--json", type=Path, default=None, help="also write all results to this JSON file")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    import torch

    from generators.refusal import transform_rows
    from pipelines.finetune import train_model
    from pipelines.finetune.evaluate import evaluate_refusal
    from pipelines.llm.embedded import load_model_and_tokenizer
    from pipelines.llm.hf import HFBackend
    from pipelines.schema import make_example, meta_of, to_table

    if args.threads:
        torch.set_num_threads(args.threads)
    path = args.data or shared_datasets() / "context_qa" / "pubmedqa_flat.jsonl"
    rows = load_rows(path, args.hint)
    random.Random(args.seed).shuffle(rows)
    if len(rows) < args.train_rows + args.eval_rows:
        raise SystemExit(f"{path} has {len(rows)} rows: too few for {args.train_rows} + {args.eval_rows}")
    train_rows, eval_rows = rows[: args.train_rows], rows[args.train_rows : args.train_rows + args.eval_rows]
    judge = {"metric": args.metric, "threshold": args.threshold}
    model, tok = load_model_and_tokenizer(args.model, device=args.device)
    t0 = time.perf_counter()

    table = to_table(make_example(r["question"], r["answer"], source="benchmark") for r in train_rows)
    backend = HFBackend(model, tok, generation_batch_size=args.batch_size)
    transformed, rejects = transform_rows(table, backend, max_tokens=args.max_tokens, **judge)
    known = sum(bool(meta_of(m)["known"]) for m in transformed["meta"])
    print(f"transform: {known}/{transformed.height} training rows known to the base model "
          f"({len(rejects)} rejects) in {time.perf_counter() - t0:.0f}s", flush=True)

    results = {}
    for name, rows_ in (("vanilla", table), ("r_tuning", transformed)):
        t = time.perf_counter()
        trained, metrics = train_model(model, tok, rows_, args.method, max_steps=args.steps, learning_rate=args.lr,
                                       batch_size=args.batch_size, seed=args.seed)
        ev = evaluate_refusal(trained, tok, eval_rows, args.max_tokens, batch_size=args.batch_size, **judge)
        ev.pop("predictions")
        results[name] = {**ev, "train_loss": metrics["train_loss"], "seconds": round(time.perf_counter() - t, 1)}
        print(f"{name}: {results[name]}", flush=True)
        del trained

    with_rt = results["r_tuning"]["answered_accuracy"]
    without = results["vanilla"]["accuracy"]  # vanilla answers every question
    ratio = (with_rt / without) if (with_rt is not None and without) else float("nan")
    print(f"\n{'model':<10} {'accuracy':>9} {'answered acc':>13} {'unsure share':>13} {'unsure acc':>11}")
    for name, r in results.items():
        cells = [r["accuracy"], r["answered_accuracy"], r["unsure_share"], r["unsure_accuracy"]]
        print(f"{name:<10} " + " ".join(f"{'-' if c is None else f'{c:.3f}':>{w}}" for c, w in zip(cells, (9, 13, 13, 11), strict=True)))
    print(f"(vanilla's answered accuracy is its accuracy on every row: it was not trained to refuse; "
          f"known train rows {known}/{transformed.height}; data {path.name}; method {args.method}, {args.steps} steps)")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "known": known, "results": results, "ratio": ratio}, indent=2))
    print(f"answered_accuracy_ratio={ratio:.3f}")


if __name__ == "__main__":
    main()
