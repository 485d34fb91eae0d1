"""Train + evaluate from a saved selection in one command (also what the Prefect flow calls).

    python -m pipelines.finetune --selection out/selected --method lora --out runs/lora \
        --eval ../shared/datasets/context_qa/adversarial_qa_parsed.jsonl --eval-limit 50 --max-steps 50

Prints the metrics and where the run was saved (adapter or weights, tokenizer,
run_settings.json, metrics.json, predictions.jsonl for QA eval sets).
"""

from __future__ import annotations

import argparse
import json
import os

from pipelines.finetune.methods import METHODS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m pipelines.finetune", description=__doc__.split("\n")[0])
    p.add_argument(
        "--selection",
        required=True,
        help="training rows: Parquet shard folder/file or JSONL "
        "(example rows, chat `messages` rows, or context-QA rows)",
    )
    p.add_argument("--out", required=True, help="folder to save the run into")
    p.add_argument("--method", default="lora", choices=METHODS, help="fine-tuning method (default: lora)")
    p.add_argument(
        "--model",
        default="embedded",
        help="'embedded' (SmolLM2-135M-Instruct), 'tiny', or a local model folder",
    )
    p.add_argument(
        "--eval", default=None, help="held-out set (same formats as --selection); context-QA JSONL adds EM/F1"
    )
    p.add_argument("--eval-limit", type=int, default=None, help="use only the first N held-out rows")
    p.add_argument("--eval-before", action="store_true", help="also measure held-out loss before training")
    p.add_argument(
        "--max-new-tokens", type=int, default=32, help="greedy answer length for EM/F1 (0 skips generation)"
    )
    p.add_argument("--train-limit", type=int, default=None, help="use only the first N training rows")
    p.add_argument(
        "--epochs", type=float, default=1.0, help="passes over the data (ignored with --max-steps)"
    )
    p.add_argument("--max-steps", type=int, default=None, help="optimizer steps; overrides --epochs")
    p.add_argument(
        "--lr",
        type=float,
        default=None,
        help="learning rate (default per method: full/hft 2e-5, lisa 5e-5, lora 2e-4, mezo 1e-5)",
    )
    p.add_argument("--batch-size", type=int, default=8, help="rows per step")
    p.add_argument(
        "--max-length",
        type=int,
        default=512,
        help="tokens per row; longer rows are cut, rows whose answer is cut away are dropped",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed for data order, LISA layers, HFT halves, MeZO noise"
    )
    p.add_argument(
        "--conditional-indicator",
        action="store_true",
        help="add [IND] to context-dependent rows (meta.ctx_dependent) and evaluate QA with and without it",
    )
    p.add_argument(
        "--control-tokens",
        action="store_true",
        help="prefix each row's prompt with its control_token label (<|good|>/<|bad|>, written by "
        "python -m pipelines.finetune.control) and evaluate with <|good|>",
    )
    p.add_argument("--lora-r", type=int, default=16, help="LoRA rank")
    p.add_argument("--lora-alpha", type=float, default=32, help="LoRA alpha")
    p.add_argument("--rslora", action="store_true", help="rank-stabilised LoRA (scale alpha/sqrt(r))")
    p.add_argument("--lisa-layers", type=int, default=2, help="LISA: decoder layers trained at a time")
    p.add_argument("--lisa-interval", type=int, default=20, help="LISA: steps between layer re-samplings")
    p.add_argument("--mezo-eps", type=float, default=1e-3, help="MeZO: perturbation size")
    p.add_argument("--weight-decay", type=float, default=0.0, help="weight decay")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach the hub from a training run
    from pipelines.finetune.training_run import run_training

    options = {"weight_decay": args.weight_decay}
    if args.method == "lora":
        options |= {"lora_r": args.lora_r, "lora_alpha": args.lora_alpha, "rslora": args.rslora}
    elif args.method == "lisa":
        options |= {"lisa_layers": args.lisa_layers, "lisa_interval": args.lisa_interval}
    elif args.method == "mezo":
        options |= {"mezo_eps": args.mezo_eps}
    metrics = run_training(
        args.selection,
        args.out,
        method=args.method,
        model=args.model,
        eval_path=args.eval,
        epochs=args.epochs,
        max_steps=args.max_steps,
        learning_rate=args.lr,
        batch_size=args.batch_size,
        max_length=args.max_length,
        seed=args.seed,
        conditional_indicator=args.conditional_indicator,
        control_tokens=args.control_tokens,
        options=options,
        train_limit=args.train_limit,
        eval_limit=args.eval_limit,
        eval_before=args.eval_before,
        max_new_tokens=args.max_new_tokens,
        device=args.device,
    )
    print(json.dumps(metrics, indent=2, sort_keys=True))
    print(f"saved run to {metrics['out_dir']}")
    return metrics


if __name__ == "__main__":
    main()
