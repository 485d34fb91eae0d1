"""Fine-tuning methods side by side on the embedded model: speed, memory, trainable params, held-out loss.

Each method runs in its own subprocess (so peak RSS is that method's alone): load the model,
train ``--steps`` steps on ``--rows`` rows of a context-QA set, measure held-out loss on
``--heldout`` rows whose passages never appear in training. A baseline subprocess measures the
untrained model's held-out loss (and its inference-only peak RSS) once.

    python -m benchmarks.finetune                                   # all methods, 50 steps, 200 rows
    python -m benchmarks.finetune --methods lora mezo --steps 10 --rows 40 --heldout 16
    python -m benchmarks.finetune --lr mezo=1e-5 --batch-size 2

Prints a table; the last line is ``methods_improved=K/N`` (held-out loss went down). tokens/s
counts non-pad training tokens once per step (MeZO runs two forward passes over them).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_DATA = (
    Path(__file__).resolve().parents[1].parent / "shared/datasets/context_qa/adversarial_qa_parsed.jsonl"
)
METHODS = ("full", "lora", "lisa", "hft", "mezo")


def split_rows(path: Path, n_train: int, n_heldout: int) -> tuple[list[dict], list[dict]]:
    """Train and held-out QA rows with disjoint passages (several questions share one passage)."""
    from pipelines.finetune.evaluate import load_qa_rows

    rows = load_qa_rows(path)
    contexts = list(dict.fromkeys(r["context"] for r in rows))
    held_ctx: set[str] = set()
    held: list[dict] = []
    for ctx in reversed(contexts):  # held-out passages from the end of the file
        if len(held) >= n_heldout:
            break
        held_ctx.add(ctx)
        held += [r for r in rows if r["context"] == ctx]
    held = held[:n_heldout]
    train = [r for r in rows if r["context"] not in held_ctx][:n_train]
    if len(train) < n_train or len(held) < n_heldout:
        raise SystemExit(f"{path} has too few rows for {n_train} train + {n_heldout} held-out")
    return train, held


def worker(args: argparse.Namespace) -> dict:
    """One method (or 'baseline') in this process; returns its measurements."""
    import torch

    from pipelines.finetune import train_model
    from pipelines.finetune.data import load_examples
    from pipelines.finetune.evaluate import heldout_loss
    from pipelines.finetune.train import peak_rss_mb
    from pipelines.llm.embedded import load_model_and_tokenizer

    torch.set_num_threads(args.threads or torch.get_num_threads())
    train = load_examples(args.train_file)
    held = load_examples(args.heldout_file)
    model, tok = load_model_and_tokenizer(args.model, device=args.device)
    kw = {"batch_size": args.batch_size, "max_length": args.max_length}
    if args.worker == "baseline":
        start = time.perf_counter()
        loss = heldout_loss(model, tok, held, **kw)
        return {
            "method": "baseline",
            "eval_loss": loss,
            "eval_s": time.perf_counter() - start,
            "peak_rss_mb": peak_rss_mb(),
        }
    lr = dict(x.split("=") for x in args.lr).get(args.worker)
    trained, metrics = train_model(
        model,
        tok,
        train,
        args.worker,
        max_steps=args.steps,
        learning_rate=float(lr) if lr else None,
        seed=args.seed,
        options={"inplace": True},
        **kw,
    )
    metrics["eval_loss"] = heldout_loss(trained, tok, held, **kw)
    metrics["peak_rss_mb"] = peak_rss_mb()  # after eval too: the whole method's peak
    metrics.pop("lisa_history", None)
    return metrics


def run_method(method: str, args: argparse.Namespace, train_file: Path, held_file: Path) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.finetune",
        "--worker",
        method,
        "--train-file",
        str(train_file),
        "--heldout-file",
        str(held_file),
        "--steps",
        str(args.steps),
        "--batch-size",
        str(args.batch_size),
        "--max-length",
        str(args.max_length),
        "--model",
        args.model,
        "--seed",
        str(args.seed),
        "--threads",
        str(args.threads),
        *(["--device", args.device] if args.device else []),
        *(["--lr", *args.lr] if args.lr else []),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stderr[-4000:])
        return {"method": method, "error": f"exit {proc.returncode}"}
    return json.loads(lines[-1][len("RESULT ") :])


def table(results: list[dict], before: float) -> str:
    head = f"{'method':<8} {'trainable':>12} {'tokens/s':>9} {'peak RSS MB':>12} {'loss before':>12} {'loss after':>11} {'delta':>8} {'train s':>8}"
    lines = [head, "-" * len(head)]
    for r in results:
        if "error" in r:
            lines.append(f"{r['method']:<8} failed ({r['error']})")
            continue
        lines.append(
            f"{r['method']:<8} {r['trainable_params']:>12,} {r['tokens_per_s']:>9.1f} {r['peak_rss_mb']:>12.0f} "
            f"{before:>12.4f} {r['eval_loss']:>11.4f} {r['eval_loss'] - before:>+8.4f} {r['train_runtime_s']:>8.1f}"
        )
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.finetune", description=__doc__.split("\n")[0])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS, help="methods to run")
    p.add_argument("--steps", type=int, default=50, help="optimizer steps per method")
    p.add_argument("--rows", type=int, default=200, help="training rows")
    p.add_argument("--heldout", type=int, default=40, help="held-out rows (passages disjoint from training)")
    p.add_argument("--batch-size", type=int, default=8, help="rows per step (also the eval batch size)")
    p.add_argument("--max-length", type=int, default=512, help="tokens per row")
    p.add_argument(
        "--lr", nargs="*", default=[], metavar="METHOD=LR", help="learning-rate overrides, e.g. mezo=1e-5"
    )
    p.add_argument("--model", default="embedded", help="'embedded', 'tiny' (smoke test) or a model folder")
    p.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="context-QA JSONL (context, question, answer)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed for data order and each method's randomness")
    p.add_argument("--threads", type=int, default=0, help="torch threads per run (0: torch's default)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--json", type=Path, default=None, help="also write all results to this JSON file")
    # Internal: the per-method subprocess.
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--train-file", default=None, help=argparse.SUPPRESS)
    p.add_argument("--heldout-file", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(worker(args)))
        return
    import tempfile

    train, held = split_rows(args.data, args.rows, args.heldout)
    with tempfile.TemporaryDirectory(prefix="bench-finetune-") as tmp:
        train_file, held_file = Path(tmp) / "train.jsonl", Path(tmp) / "held.jsonl"
        train_file.write_text("".join(json.dumps(r) + "\n" for r in train))
        held_file.write_text("".join(json.dumps(r) + "\n" for r in held))
        base = run_method("baseline", args, train_file, held_file)
        if "error" in base:
            raise SystemExit("baseline run failed")
        print(
            f"baseline: held-out loss {base['eval_loss']:.4f}, inference-only peak RSS {base['peak_rss_mb']:.0f} MB",
            flush=True,
        )
        results = []
        for method in args.methods:
            results.append(run_method(method, args, train_file, held_file))
            print(f"done {method}: {json.dumps(results[-1])}", file=sys.stderr, flush=True)
    print(
        f"\n{args.steps} steps x {args.batch_size} rows, {args.rows} train / {args.heldout} held-out rows of "
        f"{args.data.name}, model={args.model}"
    )
    print(table(results, base["eval_loss"]))
    if args.json:
        args.json.write_text(json.dumps({"baseline": base, "results": results}, indent=2))
    improved = sum(1 for r in results if "error" not in r and r["eval_loss"] < base["eval_loss"])
    print(f"methods_improved={improved}/{len(results)}")


if __name__ == "__main__":
    main()
