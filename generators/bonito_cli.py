"""The command line of generators/bonito.py: passages in, a resumable Bonito run folder out.

    python -m generators.bonito_cli data/passages.jsonl runs/bonito --task-types exqa qa [--mode chat]
"""

from __future__ import annotations

import json

from generators import bonito
from generators.bonito_template import TASK_TYPES


def main(argv: list[str] | None = None) -> None:
    import argparse

    from pipelines.llm import make_backend

    ap = argparse.ArgumentParser(description=bonito.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "passages", help="passages: .jsonl/.json/.parquet with a 'text' field, or .txt (one a line)"
    )
    ap.add_argument("out_dir", help="run folder (rerun to resume)")
    ap.add_argument(
        "--task-types", nargs="+", default=["exqa"], help="short or full names: " + ", ".join(TASK_TYPES)
    )
    ap.add_argument("--samples", type=int, default=1, help="tasks per passage and task type")
    ap.add_argument(
        "--mode",
        choices=("chat", "bonito"),
        default="chat",
        help="prompt format (bonito: a Bonito checkpoint)",
    )
    ap.add_argument("--backend", default="hf", help="hf, llamacpp, openai, vllm or auto")
    ap.add_argument("--model", default="embedded", help="embedded, tiny or a local model folder")
    ap.add_argument("--max-passages", type=int, default=None, help="use only the first N passages")
    ap.add_argument("--max-tokens", type=int, default=256, help="token cap per answer")
    ap.add_argument("--temperature", type=float, default=0.5, help="sampling temperature (Bonito: 0.5)")
    ap.add_argument("--shard-size", type=int, default=32, help="tasks per shard (unit of resume)")
    ap.add_argument("--seed", type=int, default=0, help="sampling seed")
    args = ap.parse_args(argv)
    llm = make_backend(args.backend, model=args.model)
    counts = bonito.run_bonito(
        args.passages,
        args.out_dir,
        llm,
        task_types=args.task_types,
        samples_per_passage=args.samples,
        mode=args.mode,
        seed=args.seed,
        shard_size=args.shard_size,
        max_passages=args.max_passages,
        max_tokens=args.max_tokens,
        temperature=args.temperature,
    )
    print(json.dumps(counts, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
