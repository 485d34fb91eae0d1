"""R-Tuning (refusal-aware data) vs vanilla fine-tuning on closed-book QA: does the model that was
taught to say "I am unsure" answer the questions it does answer more accurately?

Closed-book QA rows come from ``../shared/datasets/context_qa/`` (default PubMedQA: question ->
yes/no/maybe, context dropped; with a one-word hint, since a 135M model otherwise writes a
sentence; ``--context`` keeps the passage). Steps, all in one process on the same base model:

1. the judge model answers the training questions (greedy); ``generators.refusal.transform_rows``
   judges each answer (``--metric``, ``--threshold``) and suffixes the row with the certainty
   question + "I am sure." / "I am unsure.". The judge is the base model tuned ``--steps`` steps
   on ``--format-rows`` other rows: the 135M base model does not answer in the reference's form
   even when asked to ("Yes, no", or a sentence: 18 of 96 rows "known"), which would make
   "unsure" mean "wrong form" rather than "does not know" (the paper's models answer from a
   QA template). ``--format-rows 0`` lets the untuned base model judge;
2. two copies of the base model train ``--steps`` steps (``--method``): *vanilla* on the plain
   rows, *R-Tuning* on the suffixed rows;
3. both answer ``--eval-rows`` held-out questions (disjoint rows), judged the same way.
   R-Tuning: the answer is fed back with the certainty question and the model is unsure when
   " I am unsure." is likelier than " I am sure." (``generators.refusal_certainty.evaluate_refusal``);
   its *answered accuracy* is the accuracy on the rows it is sure of. Vanilla was never taught
   to refuse, so it answers everything (as in the paper): its answered accuracy is its accuracy
   on all rows. Its own sure/unsure reading (never trained) is printed for reference.

    python -m benchmarks.refusal          # 200 format, 400 train, 200 eval rows; 100 steps per model
    python -m benchmarks.refusal --format-rows 48 --train-rows 96 --eval-rows 64 --steps 24   # ~7 min

The last line is ``answered_accuracy_ratio=R-Tuning answered accuracy / vanilla accuracy``.

Measured (default command, 2 CPU cores, 21 min a seed): seed 0 -> 0.990 (R-Tuning unsure of 9.5%,
accuracy 0.32 there vs 0.57 where sure; AP 0.595 vs vanilla 0.546), seed 1 -> 1.018 (unsure of
18%, accuracy 0.61 there vs 0.52 where sure; AP 0.577 vs 0.467). Within noise of 1 (one standard
error on 200 rows is about 0.035): at 135M parameters on PubMedQA the certainty the model learns
is not a reliable signal, which is why ``refusal_aware`` stays off by default.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from benchmarks.common import shared_datasets

HINT = "Answer with one word: yes, no or maybe."


def load_rows(path: Path, hint: str, context: bool = False) -> list[dict]:
    """QA rows {question, context, answer} of a context-QA file; closed-book (context "") unless ``context``."""
    from pipelines.finetune.evaluate import load_qa_rows

    rows = load_qa_rows(path)
    return [{"question": f"{r['question']}\n{hint}".strip(), "context": r["context"] if context else "",
             "answer": str(r["answer"])} for r in rows]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.refusal", description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=None,
                   help="context-QA JSONL (default: ../shared/datasets/context_qa/pubmedqa_flat.jsonl)")
    p.add_argument("--hint", default=HINT, help="appended to every question ('' for none)")
    p.add_argument("--format-rows", type=int, default=200,
                   help="rows (disjoint) the judge model is tuned on so it answers in the reference's form; "
                        "0: the untuned base model judges which training rows are known")
    p.add_argument("--context", action="store_true", help="keep each row's context (open-book QA)")
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
    from generators.refusal_certainty import evaluate_refusal
    from pipelines.finetune import train_model
    from pipelines.llm.embedded import load_model_and_tokenizer
    from pipelines.llm.hf import HFBackend
    from pipelines.schema import make_example, meta_of, to_table

    if args.threads:
        torch.set_num_threads(args.threads)
    path = args.data or shared_datasets() / "context_qa" / "pubmedqa_flat.jsonl"
    rows = load_rows(path, args.hint, context=args.context)
    random.Random(args.seed).shuffle(rows)
    sizes = (args.train_rows, args.eval_rows, args.format_rows)
    if len(rows) < sum(sizes):
        raise SystemExit(f"{path} has {len(rows)} rows: too few for {' + '.join(map(str, sizes))}")
    train_rows, eval_rows = rows[: args.train_rows], rows[args.train_rows : args.train_rows + args.eval_rows]
    format_rows = rows[sum(sizes[:2]) : sum(sizes)]
    judge = {"metric": args.metric, "threshold": args.threshold}
    model, tok = load_model_and_tokenizer(args.model, device=args.device)

    def table_of(rows_):
        return to_table(make_example(r["question"], r["answer"], context=r["context"], source="benchmark")
                        for r in rows_)

    t0 = time.perf_counter()
    judge_model, judge_name = model, "the base model"
    if format_rows:
        judge_model, _ = train_model(model, tok, table_of(format_rows), args.method, max_steps=args.steps,
                                     learning_rate=args.lr, batch_size=args.batch_size, seed=args.seed)
        judge_name = f"the base model tuned on {len(format_rows)} other rows"
    table = table_of(train_rows)
    backend = HFBackend(judge_model, tok, generation_batch_size=args.batch_size)
    transformed, rejects = transform_rows(table, backend, max_tokens=args.max_tokens, **judge)
    known = sum(bool(meta_of(m)["known"]) for m in transformed["meta"])
    print(f"transform: {known}/{transformed.height} training rows known to {judge_name} "
          f"({len(rejects)} rejects) in {time.perf_counter() - t0:.0f}s", flush=True)
    del judge_model, backend

    results, predictions = {}, {}
    for name, rows_ in (("vanilla", table), ("r_tuning", transformed)):
        t = time.perf_counter()
        trained, metrics = train_model(model, tok, rows_, args.method, max_steps=args.steps, learning_rate=args.lr,
                                       batch_size=args.batch_size, seed=args.seed)
        ev = evaluate_refusal(trained, tok, eval_rows, args.max_tokens, batch_size=args.batch_size, **judge)
        predictions[name] = ev.pop("predictions")
        results[name] = {**ev, "train_loss": metrics["train_loss"], "seconds": round(time.perf_counter() - t, 1)}
        print(f"{name}: {results[name]}", flush=True)
        del trained

    with_rt = results["r_tuning"]["answered_accuracy"]
    without = results["vanilla"]["accuracy"]  # vanilla answers every question
    ratio = (with_rt / without) if (with_rt is not None and without) else float("nan")
    print(f"\n{'model':<10} {'accuracy':>9} {'answered acc':>13} {'unsure share':>13} {'unsure acc':>11} {'AP':>6}")
    for name, r in results.items():
        cells = [r["accuracy"], r["answered_accuracy"], r["unsure_share"], r["unsure_accuracy"], r["average_precision"]]
        widths = (9, 13, 13, 11, 6)
        print(f"{name:<10} " + " ".join(f"{'-' if c is None else f'{c:.3f}':>{w}}" for c, w in zip(cells, widths, strict=True)))
    print(f"(vanilla's answered accuracy is its accuracy on every row: it was not trained to refuse; "
          f"known train rows {known}/{transformed.height}; data {path.name}; method {args.method}, {args.steps} steps)")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "known": known, "results": results, "ratio": ratio,
                                         "predictions": predictions}, indent=2))
    print(f"answered_accuracy_ratio={ratio:.3f}")


if __name__ == "__main__":
    main()
