"""Does target-aware selection pick better fine-tuning data than random? Held-out target loss after LoRA.

    python -m benchmarks.selection                      # both targets, sized for a 2-core CPU (< 45 min)
    python -m benchmarks.selection --device cuda --pool-rows 2000 --steps 120 --max-tokens 256

Targets (``--targets``, any of):
* ``dialogue_summarization``: a T0 task type (any T0 task type name works). Target and held-out
  rows come from that type; the pool is sampled from every other T0 row (rows of the target type
  not held out stay in, at their natural rate).
* ``adversarial_qa``: ../shared/datasets/context_qa/adversarial_qa_parsed.jsonl (question + passage
  -> answer span). Target and held-out rows are disjoint; the pool is sampled from T0, minus every
  row that quotes a held-out question (T0 contains the same adversarial_qa rows as prompts).

For each target the embedded SmolLM2 (the prior) scores the pool once (``score_table``):
CoLoR-Filter (conditional model = prior + one LoRA epoch on the target rows) and target_sim
(cosine to the target rows' mean embedding); both CoLoR reductions and both target_sim poolings
come from the same forward passes (asserted). Arms, each LoRA-fine-tuned from the prior for the
same ``--steps`` at the same learning rate:

  color (the default reduction), color_<other reduction>, target_sim (default pooling),
  target_sim_<other pooling>, target_sim+color_sum (target_sim's top 30%, then CoLoR-sum's top
  third of those), random 10% (``--seeds`` seeds), random 30%, the whole pool, and ``default``:
  the shipped default config's ranking (its top_k column) at 10%, and ``otd``: GOT-D's top 10%
  (instruct_selectors/otd.py: entropic OT from the pool's embeddings to the target rows', same
  pooling as target_sim). ``--arms`` runs a subset (e.g. ``otd,target_sim,random10``).

Metrics on the held-out target rows: mean response NLL; for the QA target also exact match and
token F1 of greedy answers (pipelines.finetune.evaluate). Prints one table per target, then the
worst case over targets (ratios of held-out loss; below 1 is better than the reference):
``color_vs_random30=``, ``target_sim_vs_random10=``, ``color_vs_random10=``,
``otd_vs_random10=``, ``otd_vs_target_sim=`` and, last, ``default_vs_random10=`` (nan for an arm
left out). Rows longer than ``--max-tokens`` follow the project's one truncation
rule (pipelines/truncation.py): the whole response up to its cap, the prompt's tail.
"""

from __future__ import annotations

import argparse
import glob
import json
import random
import re
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch
from instruct_selectors.color_filter import REDUCTIONS, build_conditional
from instruct_selectors.policies import select
from instruct_selectors.score import score_table
from instruct_selectors.scores.base import build_request
from instruct_selectors.target_sim import POOLINGS, target_rows, target_vector

from benchmarks.common import REPO, read_jsonl, shared_datasets
from pipelines.llm.embedded import load_model_and_tokenizer
from pipelines.llm.hf import HFBackend
from pipelines.schema import make_example, meta_field, to_table

QA_TARGET = "adversarial_qa"


def t0_rows() -> pl.DataFrame:
    """All T0 rows as an example table (prompt -> instruction, completion -> response), unique by id."""
    files = sorted(glob.glob(str(shared_datasets() / "instruct_general" / "t0_selected_combined.part*.jsonl")))
    rows = [
        make_example(r["prompt"], r["completion"], source=r.get("source_dataset", ""),
                     meta={"task_type": r["task_type"], "template": r.get("template", "")})
        for f in files for r in read_jsonl(Path(f))
    ]
    rows = [r for r in rows if r["response"]]  # an empty answer has no tokens to score or train on
    return to_table(rows).unique("id", keep="first", maintain_order=True)


def qa_rows() -> pl.DataFrame:
    rows = [
        make_example(r["question"], r["answer"], context=r["context"], source="context_qa",
                     meta={"task_type": QA_TARGET})
        for r in read_jsonl(shared_datasets() / "context_qa" / "adversarial_qa_parsed.jsonl")
    ]
    return to_table(rows).unique("id", keep="first", maintain_order=True)


def split(t0: pl.DataFrame, target_name: str, n_target: int, n_eval: int, n_pool: int, seed: int):
    """(target, held-out, pool) for one target; held-out rows never reach the pool."""
    rng = random.Random(seed)
    if target_name == QA_TARGET:
        qa = qa_rows()
        order = list(range(qa.height))
        rng.shuffle(order)
        target, held = qa[order[:n_target]], qa[order[n_target : n_target + n_eval]]
        questions = held["instruction"].to_list()
        leaks = t0["instruction"].map_elements(lambda s: any(q in s for q in questions), return_dtype=pl.Boolean)
        rest = [i for i, leak in enumerate(leaks.to_list()) if not leak]
    else:
        types = meta_field(t0, "task_type").to_list()
        of_type = [i for i, t in enumerate(types) if t == target_name]
        if len(of_type) < n_target + n_eval:
            raise SystemExit(f"{target_name!r} has {len(of_type)} rows, fewer than target+eval={n_target + n_eval}")
        rng.shuffle(of_type)
        target, held = t0[of_type[:n_target]], t0[of_type[n_target : n_target + n_eval]]
        taken = set(of_type[: n_target + n_eval])
        rest = [i for i in range(t0.height) if i not in taken]
    pool = t0[sorted(rng.sample(rest, min(n_pool, len(rest))))]
    return target, held, pool


class Memo:
    """A backend whose loss() answers a repeated request list from memory, so the four
    score variants (2 CoLoR reductions x 2 target_sim poolings) share one pass per model."""

    def __init__(self, llm):
        self.llm, self.model, self.model_id, self.name = llm, llm.model, llm.model_id, llm.name
        self.calls, self._seen = 0, []

    def loss(self, requests, **kwargs):
        kwargs.pop("progress", None)
        for reqs, kw, results in self._seen:
            if kw == kwargs and reqs == requests:
                return results
        self.calls += 1
        results = self.llm.loss(requests, **kwargs)
        self._seen.append((list(requests), kwargs, results))
        return results


def score_pool(pool, target, prior, cond) -> pl.DataFrame:
    """score_color_<reduction>, score_target_sim_<pooling> and score_otd_<pooling> columns from one
    pass per model."""
    prior, cond = Memo(prior), Memo(cond)
    columns = {}
    for pooling in POOLINGS:
        matrix = target_rows(prior, target, pooling)
        for reduction in REDUCTIONS:
            scored = score_table(pool, prior, scores=("color", "target_sim", "otd"), cond_llm=cond,
                                 color_reduction=reduction, target_vector=target_vector(matrix),
                                 target_pooling=pooling, target_matrix=matrix)
            columns[f"score_color_{reduction}"] = scored["score_color"]
            columns[f"score_target_sim_{pooling}"] = scored["score_target_sim"]
            columns[f"score_otd_{pooling}"] = scored["score_otd"]
    # prior: one pass over the target rows (its embedding) and one over the pool; cond: one.
    assert prior.calls == 2 and cond.calls == 1, "every variant must reuse the same forward passes"
    return pool.with_columns(**columns)


def eval_metrics(model, tok, held: pl.DataFrame, max_tokens: int, qa: bool, batch: int) -> dict[str, float]:
    """Mean over held-out rows of the mean response NLL; EM/F1 of greedy answers for QA."""
    reqs = [build_request("full", i, c, r) for i, c, r in held.select("instruction", "context", "response").iter_rows()]
    results = HFBackend(model, tok, max_length=max_tokens, token_budget=8192).loss(reqs)
    out = {"eval_loss": float(np.mean([r.mean for r in results]))}
    if qa:
        from pipelines.finetune.evaluate import evaluate_qa

        res = evaluate_qa(model, tok, list(held.iter_rows(named=True)), max_new_tokens=24, batch_size=batch)
        out.update(exact_match=res["exact_match"], f1=res["f1"])
    return out


def default_arm() -> tuple[str, dict]:
    """The shipped default config's ranking step, as (column in the scored pool, step)."""
    from flows.config import PipelineConfig

    cfg = PipelineConfig()
    ranks = [s["top_k"] for s in cfg.select.steps if "top_k" in s]
    column = ranks[-1]["column"] if ranks else None
    if column == "score_color":
        return f"score_color_{cfg.score.color_reduction}", ranks[-1]
    if column == "score_target_sim":
        return f"score_target_sim_{cfg.score.target_pooling}", ranks[-1]
    raise SystemExit(f"the default config ranks by {column!r}: teach this benchmark that score")


def arms(args) -> dict[str, list[dict]]:
    from flows.config import PipelineConfig

    cfg = PipelineConfig()
    other_red = next(r for r in REDUCTIONS if r != cfg.score.color_reduction)
    other_pool = next(p for p in POOLINGS if p != cfg.score.target_pooling)
    small, big = round(args.fraction * 100), round(args.big_fraction * 100)

    def top(column):
        return [{"top_k": {"column": column, "fraction": args.fraction}}]

    out = {
        "color": top(f"score_color_{cfg.score.color_reduction}"),
        f"color_{other_red}": top(f"score_color_{other_red}"),
        "target_sim": top(f"score_target_sim_{cfg.score.target_pooling}"),
        f"target_sim_{other_pool}": top(f"score_target_sim_{other_pool}"),
        # target_sim narrows to the target's kind of rows, CoLoR-sum then ranks within them
        "target_sim+color_sum": [
            {"top_k": {"column": f"score_target_sim_{cfg.score.target_pooling}", "fraction": min(1.0, 3 * args.fraction)}},
            {"top_k": {"column": "score_color_sum", "fraction": 1 / 3}},
        ],
        # GOT-D: the rows whose mass moves the pool's embedding distribution towards the target's
        "otd": top(f"score_otd_{cfg.score.target_pooling}"),
        "default": top(default_arm()[0]),
    }
    out |= {f"random{small}_s{s}": [{"ratio": {"fraction": args.fraction, "seed": s}}] for s in range(args.seeds)}
    if args.big_fraction > 0:
        out[f"random{big}_s0"] = [{"ratio": {"fraction": args.big_fraction, "seed": 0}}]
    if args.whole_pool:
        out["whole_pool"] = []
    if args.arms:  # a shrunk run: only these arms ("random10" names every seed of it)
        def family(arm):  # random10_s2 -> random10
            return re.sub(r"^(random\d+)_s\d+$", r"\1", arm)

        keep = {a.strip() for a in args.arms.split(",") if a.strip()}
        unknown = keep - set(out) - {family(a) for a in out}
        if unknown:
            raise SystemExit(f"unknown arm(s) {sorted(unknown)}: choose from {sorted(out)}")
        out = {a: s for a, s in out.items() if a in keep or family(a) in keep}
    return out


def run_target(name: str, t0: pl.DataFrame, model, tok, args) -> list[dict]:
    from pipelines.finetune import train_model

    qa = name == QA_TARGET
    target, held, pool = split(t0, name, args.target_rows, args.eval_rows, args.pool_rows, args.seed)
    print(f"\n### target {name}: target={target.height} held-out={held.height} pool={pool.height}", flush=True)
    t = time.perf_counter()
    cond_path = build_conditional(args.model, target, args.cache_dir, method="lora", epochs=1, seed=args.seed,
                                  max_length=args.max_tokens, batch_size=args.batch_size, learning_rate=args.lr)
    cond_model, cond_tok = load_model_and_tokenizer(str(cond_path), device=args.device)
    backend = {"max_length": args.max_tokens, "token_budget": args.token_budget}
    scored = score_pool(pool, target, HFBackend(model, tok, **backend), HFBackend(cond_model, cond_tok, **backend))
    del cond_model
    print(f"conditional model + scored pool: {time.perf_counter() - t:.0f}s", flush=True)
    Path(args.cache_dir).mkdir(parents=True, exist_ok=True)
    scored.drop([c for c in scored.columns if c == "embedding"]).write_parquet(
        Path(args.cache_dir) / f"scored_pool_{name}.parquet")  # kept to inspect the picks (runs/ is ignored)

    results = [{"target": name, "arm": "base", "rows": 0, "target_share": float("nan"), "train_s": 0.0,
                **eval_metrics(model, tok, held, args.max_tokens, qa, args.batch_size * 2)}]
    print("  base: " + " ".join(f"{k}={results[0][k]:.4f}" for k in ("eval_loss", "exact_match", "f1")
                                if k in results[0]), flush=True)
    done: dict[str, dict] = {}
    for arm, steps in arms(args).items():
        same = next((a for a, s in done.items() if s["steps"] == steps), None)
        if same is not None:  # the default is one of the arms: same rows, same seed, same result
            results.append({**done[same]["result"], "arm": arm})
            print(f"  {arm}: same selection as {same}", flush=True)
            continue
        chosen, _ = select(scored, steps)
        rows = chosen.filter(pl.col("keep")) if steps else chosen
        share = float((meta_field(rows, "task_type") == name).mean()) if not qa else float("nan")
        seed = int(arm.rsplit("_s", 1)[1]) if arm.startswith("random") else 0
        t = time.perf_counter()
        tuned, _m = train_model(model, tok, rows.select("id", "instruction", "context", "response", "meta"),
                                method="lora", max_steps=args.steps, batch_size=args.batch_size,
                                max_length=args.max_tokens, learning_rate=args.lr, seed=seed)
        train_s = time.perf_counter() - t
        metrics = eval_metrics(tuned, tok, held, args.max_tokens, qa, args.batch_size * 2)
        del tuned
        if not arm.startswith("random") and arm != "whole_pool":
            kinds = meta_field(rows, "task_type").value_counts(sort=True).head(3).rows()
            n_tok = [len(tok(r, add_special_tokens=False)["input_ids"]) for r in rows["response"].to_list()]
            print(f"  {arm} picks: " + ", ".join(f"{k}={n}" for k, n in kinds)
                  + f"; median response tokens {np.median(n_tok):.0f}", flush=True)
        results.append({"target": name, "arm": arm, "rows": rows.height, "target_share": share,
                        "train_s": train_s, **metrics})
        done[arm] = {"steps": steps, "result": results[-1]}
        print(f"  {arm}: rows={rows.height} " + " ".join(f"{k}={v:.4f}" for k, v in metrics.items())
              + f" ({train_s:.0f}s)", flush=True)
    return results


def summarise(res: pl.DataFrame, args) -> dict[str, float]:
    """Per target: the reference losses and the four ratios; returns the worst case over targets."""
    small, big = round(args.fraction * 100), round(args.big_fraction * 100)
    worst: dict[str, float] = {}
    for name in res["target"].unique(maintain_order=True).to_list():
        part = res.filter(pl.col("target") == name)
        loss = dict(zip(part["arm"].to_list(), part["eval_loss"].to_list(), strict=True))
        rnd = part.filter(pl.col("arm").str.starts_with(f"random{small}_s"))["eval_loss"]
        ref10 = float(rnd.mean())
        ref30 = loss.get(f"random{big}_s0", float("nan"))
        nan = float("nan")  # an arm left out with --arms
        ratios = {
            "color_vs_random30": loss.get("color", nan) / ref30,
            "target_sim_vs_random10": loss.get("target_sim", nan) / ref10,
            "color_vs_random10": loss.get("color", nan) / ref10,
            "otd_vs_random10": loss.get("otd", nan) / ref10,
            "otd_vs_target_sim": loss.get("otd", nan) / loss.get("target_sim", nan),
            "default_vs_random10": loss.get("default", nan) / ref10,
        }
        print(f"{name}: random{small} mean={ref10:.4f} (min {rnd.min():.4f}, max {rnd.max():.4f}, "
              f"spread {rnd.max() - rnd.min():.4f} over {rnd.len()} seeds); "
              + " ".join(f"{k}={v:.4f}" for k, v in ratios.items()))
        for k, v in ratios.items():
            worst[k] = max(worst.get(k, -np.inf), v) if not np.isnan(v) else worst.get(k, v)
    return worst


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", default=f"dialogue_summarization,{QA_TARGET}",
                    help=f"comma-separated: T0 task types and/or {QA_TARGET}")
    ap.add_argument("--pool-rows", type=int, default=500, help="candidate rows sampled per target")
    ap.add_argument("--max-tokens", type=int, default=192, help="tokens per row (prompt tail + response)")
    ap.add_argument("--steps", type=int, default=16, help="LoRA optimizer steps for every arm")
    ap.add_argument("--seeds", type=int, default=3, help="random 10%% seeds (each one fine-tune)")
    ap.add_argument("--target-rows", type=int, default=100, help="target rows (conditional model, target vector)")
    ap.add_argument("--eval-rows", type=int, default=60, help="held-out target rows for the metrics")
    ap.add_argument("--fraction", type=float, default=0.1, help="size of the target-aware and small random picks")
    ap.add_argument("--big-fraction", type=float, default=0.3, help="the larger random pick (0: skip it)")
    ap.add_argument("--no-whole-pool", dest="whole_pool", action="store_false", help="skip the whole-pool arm")
    ap.add_argument("--arms", help="comma-separated arms to run (default: all), e.g. otd,target_sim,random10")
    ap.add_argument("--batch-size", type=int, default=4, help="fine-tuning batch size (conditional model too)")
    ap.add_argument("--lr", type=float, default=5e-4, help="LoRA learning rate (conditional model too)")
    ap.add_argument("--token-budget", type=int, default=4096, help="scoring: tokens per batch")
    ap.add_argument("--model", default="embedded", help="prior / model to fine-tune: embedded, tiny or a folder")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--cache-dir", default=str(REPO / "runs" / "selection_bench"), help="conditional-model cache")
    ap.add_argument("--seed", type=int, default=0, help="data split seed")
    ap.add_argument("--json", help="also write every arm's metrics to this JSON file")
    args = ap.parse_args(argv)

    t_start = time.perf_counter()
    torch.manual_seed(args.seed)
    model, tok = load_model_and_tokenizer(args.model, device=args.device)
    t0 = t0_rows()
    print(f"pool_rows={args.pool_rows} max_tokens={args.max_tokens} steps={args.steps} batch={args.batch_size} "
          f"lr={args.lr} seeds={args.seeds} device={args.device} threads={torch.get_num_threads()} "
          f"default={default_arm()[0]}", flush=True)
    results = []
    for name in [t.strip() for t in args.targets.split(",") if t.strip()]:
        results += run_target(name, t0, model, tok, args)
        if args.json:  # after every target, so a run cut short keeps what it measured
            Path(args.json).write_text(json.dumps(results, indent=1))
    res = pl.DataFrame(results)
    with pl.Config(tbl_rows=100, tbl_cols=12, tbl_hide_dataframe_shape=True, float_precision=4):
        for name in res["target"].unique(maintain_order=True).to_list():
            print(f"\n{name}")
            print(res.filter(pl.col("target") == name).drop("target"))
    print()
    worst = summarise(res, args)
    print(f"wall_time_s={time.perf_counter() - t_start:.0f}")
    for key in ("color_vs_random30", "target_sim_vs_random10", "color_vs_random10", "otd_vs_random10",
                "otd_vs_target_sim", "default_vs_random10"):
        print(f"{key}={worst[key]:.4f}")


if __name__ == "__main__":
    main()
