"""Does CoLoR-Filter pick better fine-tuning data than random? Held-out target loss after LoRA.

    python -m benchmarks.selection [--pool-rows 2000] [--max-tokens 256] [--steps 40] [--seeds 2]

Data: ../shared/datasets/instruct_general/t0_selected_combined.part*.jsonl (prompt, completion,
task_type). One task type (``--task-type``) gives a target set (``--target-rows``) and a disjoint
evaluation set (``--eval-rows``), both held out; the pool is a seeded sample of ``--pool-rows``
from everything else (other rows of the target type included, at their natural rate).

1. Conditional model: the embedded SmolLM2 (the prior) + one epoch of LoRA on the target set,
   via ``color_filter.build_conditional`` (cached under ``--cache-dir``; a rerun reuses it).
2. Score the pool with ``score.score_table(..., scores=("color",))``: L_prior - L_cond per row,
   L the mean response-token NLL (``color``) and, from the same forward passes, the sum
   (``color_sum``: log p(resp | cond) - log p(resp | prior), the paper's whole-sequence form).
3. Select with ``policies.select``: CoLoR top 10% (mean and sum), random 10% and random 30%
   (``--seeds`` seeds each; ``--big-fraction 0`` skips random 30%).
4. LoRA-fine-tune the prior on each selection for the same ``--steps`` (``pipelines.finetune``),
   then the mean per-row response NLL on the evaluation set (the base model's too).

Prints one table (loss per selection, share of target-type rows in it, wall times) and, last,
``color_sum_vs_random10=...`` and ``color_vs_random10=<CoLoR loss / mean random-10% loss>``
(below 1: CoLoR helps; the last line is the default, mean reduction). Everything
is truncated to ``--max-tokens``, so the run shrinks to fit a 2-core CPU.
"""

from __future__ import annotations

import argparse
import glob
import random
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch
from instruct_selectors.color_filter import build_conditional
from instruct_selectors.score import build_request, score_table
from instruct_selectors.policies import select

from benchmarks.common import REPO, read_jsonl, shared_datasets
from pipelines.llm.embedded import load_model_and_tokenizer
from pipelines.llm.hf import HFBackend
from pipelines.schema import make_example, meta_field, to_table


def load_rows() -> pl.DataFrame:
    """All T0 rows as an example table (prompt -> instruction, completion -> response), unique by id."""
    files = sorted(
        glob.glob(str(shared_datasets() / "instruct_general" / "t0_selected_combined.part*.jsonl"))
    )
    rows = [
        make_example(
            r["prompt"],
            r["completion"],
            source=r.get("source_dataset", ""),
            meta={"task_type": r["task_type"], "template": r.get("template", "")},
        )
        for f in files
        for r in read_jsonl(Path(f))
    ]
    rows = [r for r in rows if r["response"]]  # an empty answer has no tokens to score or train on
    return to_table(rows).unique("id", keep="first", maintain_order=True)


def split(table: pl.DataFrame, task_type: str, target_rows: int, eval_rows: int, pool_rows: int, seed: int):
    """(target, eval, pool): target and eval from ``task_type``, the pool from everything left."""
    types = meta_field(table, "task_type").to_list()
    rng = random.Random(seed)
    of_type = [i for i, t in enumerate(types) if t == task_type]
    if len(of_type) < target_rows + eval_rows:
        raise SystemExit(
            f"{task_type!r} has {len(of_type)} rows, fewer than target+eval={target_rows + eval_rows}"
        )
    rng.shuffle(of_type)
    target, held = of_type[:target_rows], of_type[target_rows : target_rows + eval_rows]
    taken = set(target) | set(held)
    rest = [i for i in range(table.height) if i not in taken]
    pool = sorted(rng.sample(rest, min(pool_rows, len(rest))))
    return table[target], table[held], table[pool]


def truncate(table: pl.DataFrame, tok, max_tokens: int, overhead: int = 40) -> pl.DataFrame:
    """Cut rows to fit ``max_tokens`` with the chat template: the response to at most half, the
    instruction to its *tail* (T0 prompts end with the question). Done on the text, once, so the
    scorer and the trainer (which would drop over-long rows) see the same rows."""

    def ids(text: str) -> list[int]:
        return tok(text, add_special_tokens=False)["input_ids"]

    instructions, responses = [], []
    for instr, resp in table.select("instruction", "response").iter_rows():
        r = ids(resp)[: max_tokens // 2]
        i = ids(instr)
        room = max(8, max_tokens - overhead - len(r))
        instructions.append(tok.decode(i[-room:]).strip() if len(i) > room else instr)
        responses.append(tok.decode(r).strip() if len(r) < len(ids(resp)) else resp)
    return table.with_columns(pl.Series("instruction", instructions), pl.Series("response", responses))


class Memo:
    """A backend whose loss() answers a repeated request list from memory: one forward pass
    serves both CoLoR reductions (score_table is called once per reduction)."""

    def __init__(self, llm):
        self.llm, self.model, self.calls, self._seen = llm, llm.model, 0, []

    def loss(self, requests, **kwargs):
        for reqs, kw, results in self._seen:
            if kw == kwargs and reqs == requests:
                return results
        self.calls += 1
        results = self.llm.loss(requests, **kwargs)
        self._seen.append((list(requests), kwargs, results))
        return results


def eval_loss(model, tok, eval_table: pl.DataFrame, max_tokens: int) -> float:
    """Mean over evaluation rows of the mean response-token NLL (same chat form as training)."""
    reqs = [
        build_request("full", i, c, r)
        for i, c, r in eval_table.select("instruction", "context", "response").iter_rows()
    ]
    results = HFBackend(model, tok, max_length=max_tokens, token_budget=4096).loss(reqs)
    return float(np.mean([r.mean for r in results]))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--pool-rows", type=int, default=2000, help="candidate rows sampled from the non-held-out data"
    )
    ap.add_argument(
        "--max-tokens", type=int, default=256, help="truncate every row (prompt + response) to this"
    )
    ap.add_argument("--steps", type=int, default=40, help="LoRA optimizer steps for every selection")
    ap.add_argument("--seeds", type=int, default=2, help="random-selection seeds (each one fine-tune)")
    ap.add_argument("--task-type", default="dialogue_summarization", help="the target task type")
    ap.add_argument(
        "--target-rows", type=int, default=100, help="target rows the conditional model trains on"
    )
    ap.add_argument("--eval-rows", type=int, default=60, help="held-out rows of the target type for the loss")
    ap.add_argument("--fraction", type=float, default=0.1, help="CoLoR / small random selection size")
    ap.add_argument(
        "--big-fraction", type=float, default=0.3, help="the larger random selection (0: skip it)"
    )
    ap.add_argument(
        "--batch-size", type=int, default=4, help="fine-tuning batch size (conditional model too)"
    )
    ap.add_argument("--lr", type=float, default=5e-4, help="LoRA learning rate (conditional model too)")
    ap.add_argument(
        "--model", default="embedded", help="prior / model to fine-tune: embedded, tiny or a folder"
    )
    ap.add_argument(
        "--cache-dir", default=str(REPO / "runs" / "selection_bench"), help="conditional-model cache"
    )
    ap.add_argument("--seed", type=int, default=0, help="data split seed")
    args = ap.parse_args(argv)
    from pipelines.finetune import train_model

    t_start = time.perf_counter()
    times: dict[str, float] = {}
    torch.manual_seed(args.seed)

    model, tok = load_model_and_tokenizer(args.model, device="cpu")
    table = load_rows()
    target, held, pool = split(
        table, args.task_type, args.target_rows, args.eval_rows, args.pool_rows, args.seed
    )
    target, held, pool = (truncate(t, tok, args.max_tokens) for t in (target, held, pool))
    print(
        f"rows={table.height} task_type={args.task_type} target={target.height} eval={held.height} "
        f"pool={pool.height} max_tokens={args.max_tokens} steps={args.steps} batch={args.batch_size} "
        f"lr={args.lr} threads={torch.get_num_threads()}",
        flush=True,
    )

    t = time.perf_counter()
    cond_path = build_conditional(
        args.model,
        target,
        args.cache_dir,
        method="lora",
        epochs=1,
        seed=args.seed,
        max_length=args.max_tokens,
        batch_size=args.batch_size,
        learning_rate=args.lr,
    )
    times["conditional"] = time.perf_counter() - t
    print(f"conditional model: {cond_path} ({times['conditional']:.0f}s)", flush=True)

    t = time.perf_counter()
    cond_model, cond_tok = load_model_and_tokenizer(str(cond_path), device="cpu")
    prior = HFBackend(model, tok, max_length=args.max_tokens, token_budget=4096)
    cond = HFBackend(cond_model, cond_tok, max_length=args.max_tokens, token_budget=4096)
    prior, cond = Memo(prior), Memo(cond)
    scored = score_table(pool, prior, scores=("color",), cond_llm=cond)
    summed = score_table(pool, prior, scores=("color",), cond_llm=cond, color_reduction="sum")
    assert prior.calls == cond.calls == 1, "the sum reduction must reuse the mean's forward passes"
    scored = scored.with_columns(summed["score_color"].alias("score_color_sum"))
    del cond, cond_model
    Path(args.cache_dir).mkdir(parents=True, exist_ok=True)
    # Kept for inspecting what CoLoR picked (runs/ is git-ignored).
    scored.write_parquet(Path(args.cache_dir) / "scored_pool.parquet")
    times["score_pool"] = time.perf_counter() - t
    print(
        f"scored pool ({times['score_pool']:.0f}s): score_color mean={scored['score_color'].mean():.4f} "
        f"std={scored['score_color'].std():.4f}; score_color_sum mean={scored['score_color_sum'].mean():.4f} "
        f"std={scored['score_color_sum'].std():.4f}",
        flush=True,
    )

    selections = {
        "color": [{"top_k": {"column": "score_color", "fraction": args.fraction}}],
        "color_sum": [{"top_k": {"column": "score_color_sum", "fraction": args.fraction}}],
    }
    for s in range(args.seeds):
        selections[f"random{round(args.fraction * 100)}_s{s}"] = [
            {"ratio": {"fraction": args.fraction, "seed": s}}
        ]
    for s in range(args.seeds if args.big_fraction > 0 else 0):
        selections[f"random{round(args.big_fraction * 100)}_s{s}"] = [
            {"ratio": {"fraction": args.big_fraction, "seed": s}}
        ]

    t = time.perf_counter()
    results = [
        {
            "selection": "base (no fine-tuning)",
            "rows": 0,
            "target_share": float("nan"),
            "eval_loss": eval_loss(model, tok, held, args.max_tokens),
            "train_s": 0.0,
        }
    ]
    times["eval_base"] = time.perf_counter() - t
    for name, steps in selections.items():
        chosen, _summary = select(scored, steps)
        rows = chosen.filter(pl.col("keep"))
        share = (
            float((meta_field(rows, "task_type") == args.task_type).mean()) if rows.height else float("nan")
        )
        if name.startswith("color"):  # the task types CoLoR favours say whether it found the target
            top = meta_field(rows, "task_type").value_counts(sort=True).head(5).rows()
            n_tok = [len(tok(r, add_special_tokens=False)["input_ids"]) for r in rows["response"].to_list()]
            print(
                f"  {name} picks by task type: "
                + ", ".join(f"{t}={n}" for t, n in top)
                + f"; median response tokens {np.median(n_tok):.0f}",
                flush=True,
            )
        seed = int(name.rsplit("_s", 1)[1]) if name.startswith("random") else 0
        t = time.perf_counter()
        tuned, metrics = train_model(
            model,
            tok,
            rows.select("id", "instruction", "context", "response", "meta"),
            method="lora",
            max_steps=args.steps,
            batch_size=args.batch_size,
            max_length=args.max_tokens,
            learning_rate=args.lr,
            seed=seed,
        )
        train_s = time.perf_counter() - t
        loss = eval_loss(tuned, tok, held, args.max_tokens)
        del tuned
        results.append(
            {
                "selection": name,
                "rows": rows.height,
                "target_share": share,
                "eval_loss": loss,
                "train_s": train_s,
            }
        )
        print(
            f"  {name}: rows={rows.height} target_share={share:.3f} train_loss={metrics['train_loss']:.4f} "
            f"eval_loss={loss:.4f} ({train_s:.0f}s train)",
            flush=True,
        )

    res = pl.DataFrame(results)
    small = round(args.fraction * 100)
    big = round(args.big_fraction * 100)
    summary = []
    for label, prefix in (
        ("color", "color"),
        ("color_sum", "color_sum"),
        (f"random{small}", f"random{small}_s"),
        (f"random{big}", f"random{big}_s"),
    ):
        part = res.filter(pl.col("selection").str.starts_with(prefix))
        if label == "color":
            part = res.filter(pl.col("selection") == "color")
        if part.is_empty():
            continue
        summary.append(
            {
                "selection": f"{label} (mean of {part.height})" if part.height > 1 else label,
                "eval_loss": part["eval_loss"].mean(),
                "rows": int(part["rows"][0]),
            }
        )
    total = time.perf_counter() - t_start
    with pl.Config(tbl_rows=50, tbl_cols=10, fmt_str_lengths=40, tbl_hide_dataframe_shape=True):
        print(res)
        print(pl.DataFrame(summary))
    print(
        f"wall_time_s={total:.0f} (conditional {times['conditional']:.0f}s, score pool {times['score_pool']:.0f}s)"
    )
    loss = {s["selection"].split(" ")[0]: s["eval_loss"] for s in summary}
    print(f"color_sum_vs_random10={loss['color_sum'] / loss[f'random{small}']:.4f}")
    print(f"color_vs_random10={loss['color'] / loss[f'random{small}']:.4f}")


if __name__ == "__main__":
    main()
