"""Does generated data help? Raw domain text -> tasks -> selection -> LoRA, against the baselines.

    # the default command (2 cores: about 2 h; --seeds 3 about 80 min)
    python -m benchmarks.domain_adapt
    # a run cut short goes on where it stopped (same options, same file)
    python -m benchmarks.domain_adapt --json benchmarks/results/domain_adapt.json --resume
    # smoke run (minutes): python -m benchmarks.domain_adapt --passages 20 --eval-rows 30 --seeds 1 --steps 2

Data (benchmarks/domain_data.py): PubMed abstracts and PubMedQA rows split by pmid. ``--eval-rows``
PubMedQA rows on held-out pmids evaluate; generation, DAPT and the ``--target-rows`` target rows
use the other pmids only (asserted).

Generation runs through the product: ``python -m flows.build_dataset --no-taxonomy`` on
``--passages`` generation-side abstracts with ``--task-types`` (default: the grounded types,
generators/grounded.py), the target rows as ``score.target``, and the shipped default selection
with its last ``top_k`` keeping ``--rows`` rows (the row budget). The run folder is reused on a
rerun (the flow resumes and skips what it made).

Arms, each a LoRA fine-tune of the embedded model for ``--steps`` steps of ``--batch-size`` rows at
``--lr``, on ``--rows`` rows unless said, every one over ``--seeds`` training seeds (the random
arms also draw their rows with that seed):
  base (untrained); dapt (next-token training on generation-side abstracts: each abstract is the
  answer to an empty prompt, so every token of it is trained on); general (T0 rows at random);
  generated_random (the run's generated rows at random); generated_selected (the run's selection);
  target_only (the target rows alone); target_plus_selected (target rows + the selection).

Metrics (benchmarks/domain_eval.py), per arm mean +- SE over seeds: ranked-choice accuracy over
Yes/No/Maybe (majority-class rate beside it) and the long answer's mean NLL. The last line is the
selected arm's long-answer NLL over the best of base, dapt and general (< 1: generated data won).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

from benchmarks.common import REPO
from benchmarks.domain_data import split_by_pmid
from benchmarks.domain_eval import pubmedqa_metrics
from pipelines.llm.embedded import load_model_and_tokenizer
from pipelines.schema import make_example, to_table

ARMS = ("base", "dapt", "general", "generated_random", "generated_selected", "target_only", "target_plus_selected")
BASELINES = ("base", "dapt", "general")
COLUMNS = ["id", "instruction", "context", "response", "meta"]


def write_jsonl(rows: list[dict], path: Path) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def flow_config(args, work: Path) -> str:
    """The run's config: the shipped default selection, its last top_k keeping --rows rows."""
    from flows.config import PipelineConfig

    steps = [s.spec() for s in PipelineConfig().select.steps]
    last = max(i for i, s in enumerate(steps) if "top_k" in s)
    steps[last]["top_k"] = {**{k: v for k, v in steps[last]["top_k"].items() if k != "fraction"}, "k": args.rows}
    config = {"generate": {"text": {"path": str(work / "passages.jsonl"), "task_types": args.task_types.split(",")}},
              "score": {"target": str(work / "target.jsonl")}, "select": {"steps": steps}}
    return json.dumps(config, indent=1)  # JSON is YAML: the flow reads it with --config run.yaml


def generate(args, work: Path) -> tuple[pl.DataFrame, pl.DataFrame, float]:
    """(every generated row, the selected rows, seconds): the product's flow, resumed when rerun."""
    (work / "run.yaml").write_text(flow_config(args, work), encoding="utf-8")
    t = time.perf_counter()
    cmd = [sys.executable, "-m", "flows.build_dataset", "--config", str(work / "run.yaml"), "--no-taxonomy",
           "--out-dir", str(work / "runs"), "--run-name", "generated", "--seed", str(args.seed), "--model", args.model]
    cmd += ["--backend", args.backend] if args.backend else []
    subprocess.run(cmd, check=True, cwd=REPO)
    rows = pl.read_parquet(work / "runs" / "generated" / "selected" / "all.parquet")
    return rows.select(COLUMNS), rows.filter(pl.col("keep")).select(COLUMNS), time.perf_counter() - t


def arm_rows(arm: str, seed: int, data: dict, n: int) -> pl.DataFrame | None:
    rng = random.Random(seed)

    def draw(table: pl.DataFrame) -> pl.DataFrame:
        return table[sorted(rng.sample(range(table.height), min(n, table.height)))]

    return {
        "base": lambda: None,
        "dapt": lambda: draw(data["abstracts"]),
        "general": lambda: draw(data["t0"]),
        "generated_random": lambda: draw(data["generated"]),
        "generated_selected": lambda: data["selected"],
        "target_only": lambda: data["target"],
        "target_plus_selected": lambda: pl.concat([data["target"], data["selected"]]),
    }[arm]()


def rows_key(rows: pl.DataFrame | None) -> str:
    """What an arm trained on (a resumed run retrains an arm whose rows changed, e.g. a new selection)."""
    if rows is None:
        return ""
    return hashlib.sha256("\n".join(sorted(rows["id"].to_list())).encode()).hexdigest()[:16]


def difference(stats: dict, arm: str, base: str, metric: str) -> str:
    """``arm``'s mean minus ``base``'s on ``metric``, in units of the difference's SE over training
    seeds (the evaluation rows are the same for every arm, so their sampling noise is not in it);
    no SE when a trained arm has one seed (base, untrained, has none to have)."""
    (m, s), (bm, bs) = stats[arm][metric], stats[base][metric]
    if min(stats[a]["seeds"] for a in (arm, base) if a != "base") < 2:
        return f"{m - bm:+.4f} (one seed: no SE)"
    return f"{m - bm:+.4f} ({(m - bm) / np.hypot(s, bs):+.1f} SE)"


def report(results: list[dict], wall_s: float) -> None:
    df = pl.DataFrame(results)
    print(f"\n=== PubMedQA held-out ({int(df['eval_rows'][0])} rows; majority-class rate "
          f"{df['majority_rate'][0]:.3f}) ===")
    print(f"{'arm':22} {'seeds':>5} {'rows':>5} {'accuracy':>17} {'long-answer NLL':>17} {'picked yes/no/maybe':>20}")
    stats = {}
    for arm in ARMS:
        part = df.filter(pl.col("arm") == arm)
        if not part.height:
            continue
        k = part.height
        stats[arm] = {c: (float(part[c].mean()), float(part[c].std() / np.sqrt(k)) if k > 1 else 0.0)
                      for c in ("accuracy", "long_nll")} | {"seeds": k}
        picks = "/".join(f"{part[f'picked_{c}'].mean():.2f}" for c in ("yes", "no", "maybe"))
        print(f"{arm:22} {k:>5} {int(part['rows'][0]):>5} "
              + " ".join(f"{stats[arm][c][0]:>9.4f} ± {stats[arm][c][1]:.4f}" for c in ("accuracy", "long_nll"))
              + f" {picks:>20}")
    best = min((a for a in BASELINES if a in stats), key=lambda a: stats[a]["long_nll"][0], default=None)
    for arm in ("generated_selected", "target_plus_selected", "generated_random", "target_only"):
        if arm in stats and best:
            print(f"{arm} vs best baseline ({best}): long-answer NLL {difference(stats, arm, best, 'long_nll')}")
    for arm in ("generated_selected", "generated_random"):  # the bar: every baseline, both metrics
        for base in (b for b in BASELINES if arm in stats and b in stats):
            print(f"{arm} vs {base}: long-answer NLL {difference(stats, arm, base, 'long_nll')}, "
                  f"accuracy {difference(stats, arm, base, 'accuracy')}")
    print(f"wall_time_s={wall_s:.0f}")
    ratio = stats["generated_selected"]["long_nll"][0] / stats[best]["long_nll"][0] if best and "generated_selected" in stats else float("nan")
    print(f"generated_selected_vs_best_baseline_nll={ratio:.4f}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--eval-rows", type=int, default=300, help="PubMedQA rows on held-out pmids")
    ap.add_argument("--target-rows", type=int, default=50, help="labelled target rows (generation-side pmids)")
    ap.add_argument("--passages", type=int, default=200, help="generation-side abstracts to generate from")
    ap.add_argument("--task-types", default="conclusion,yesno,span", help="generate.text.task_types")
    ap.add_argument("--rows", type=int, default=128, help="row budget of every trained arm")
    ap.add_argument("--steps", type=int, default=32, help="LoRA steps of every arm")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--seeds", type=int, default=5, help="training seeds (and row draws) per trained arm")
    ap.add_argument("--max-tokens", type=int, default=384, help="tokens per row, training and evaluation")
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--model", default="embedded", help="the model that generates, scores and is fine-tuned: "
                    "embedded, tiny or a local folder (a larger model: with --backend vllm or openai for the flow)")
    ap.add_argument("--backend", help="the flow's LLM backend (model.backend: auto, hf, vllm, openai, llamacpp)")
    ap.add_argument("--seed", type=int, default=0, help="split and generation seed")
    ap.add_argument("--work", default=str(REPO / "runs" / "domain_bench"), help="generated data and run folder")
    ap.add_argument("--json", help="results file, written after every arm")
    ap.add_argument("--resume", action="store_true", help="with --json: keep the arms it holds that were measured "
                    "with the same settings on the same rows (a changed selection retrains its arms)")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    settings = {k: v for k, v in sorted(vars(args).items()) if k not in ("work", "json", "resume", "arms", "seeds") and not (k == "backend" and v is None)}
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    split = split_by_pmid(args.eval_rows, args.target_rows, args.passages, args.seed)
    eval_pmids = {json.loads(r["meta"])["pmid"] for r in split.evaluation}
    assert not eval_pmids & {p["id"] for p in split.passages}, "an evaluation abstract reached generation"
    assert not eval_pmids & {json.loads(r["meta"])["pmid"] for r in split.target}, "an evaluation row is a target row"
    write_jsonl(split.passages, work / "passages.jsonl")
    write_jsonl(split.target, work / "target.jsonl")
    generated, selected, gen_s = generate(args, work)
    print(f"generated {generated.height} rows, selected {selected.height} ({gen_s:.0f} s in the flow)", flush=True)
    from benchmarks.selection_data import t0_rows

    data = {"abstracts": to_table([make_example("", p["text"], source="pubmed") for p in split.passages]),
            "t0": t0_rows().select(COLUMNS), "generated": generated, "selected": selected,
            "target": to_table(split.target).select(COLUMNS)}
    torch.manual_seed(args.seed)
    model, tok = load_model_and_tokenizer(args.model)
    labels = [json.loads(r["meta"])["label"] for r in split.evaluation]
    results: list[dict] = []
    path = Path(args.json) if args.json else None
    if args.resume and path and path.exists():
        saved = json.loads(path.read_text())
        if saved["settings"] != settings:
            raise SystemExit(f"{path}: measured with other settings; rerun without --resume")
        results = saved["results"]
    from pipelines.finetune import train_model

    # seed by seed: a run cut short has every arm at the seeds it reached
    for seed, arm in [(s, a) for s in range(args.seeds) for a in args.arms.split(",") if a != "base" or s == 0]:
        rows = arm_rows(arm, seed, data, args.rows)
        key = rows_key(rows)
        if any(r["arm"] == arm and r["seed"] == seed and r.get("rows_key") == key for r in results):
            continue  # the same rows under the same settings: measured already
        results = [r for r in results if (r["arm"], r["seed"]) != (arm, seed)]
        t = time.perf_counter()
        tuned, info = (model, {}) if rows is None else train_model(
            model, tok, rows, method="lora", max_steps=args.steps, batch_size=args.batch_size,
            max_length=args.max_tokens, learning_rate=args.lr, seed=seed,
            options={"micro_batch": args.batch_size, "gradient_checkpointing": False})  # speed only: same loss
        metrics = pubmedqa_metrics(tuned, tok, split.evaluation, labels, args.max_tokens)
        results.append({"arm": arm, "seed": seed, "rows_key": key, "rows": 0 if rows is None else rows.height,
                        "train_tokens": info.get("train_tokens", 0), "eval_rows": len(labels),
                        "seconds": time.perf_counter() - t, **metrics})
        print(f"  {arm} s{seed}: " + " ".join(f"{k}={v:.4f}" for k, v in metrics.items())
              + f" ({results[-1]['seconds']:.0f} s)", flush=True)
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"settings": settings, "generation_s": gen_s, "results": results}, indent=1))
    report(results, time.perf_counter() - t_start)


if __name__ == "__main__":
    main()
