"""The score stage as users run it, against the scoring engine in the same process (issue 39).

    python -m benchmarks.flow_speed [--rows 400] [--default-job]

1. Writes ``--rows`` T0 rows (../shared/datasets/instruct_general) as a JSONL file and runs the
   flow on it in this process, as ``python -m flows.build_dataset --no-taxonomy --no-text --input
   <rows>`` does (the default scores, the default target data/target.jsonl), in a fresh run folder
   under a temporary directory. From the score stage's record: its seconds and the tokens its
   models read (the usage table) -> ``score_stage_tokens_per_s``.
2. The engine, in the same process afterwards: the int8 scorer (CTranslate2, what scoring_engine
   "auto" picks on CPU) reading the same rows in the full prompt form -> ``engine_tokens_per_s``.
3. ``--default-job``: the default job (``python -m flows.build_dataset`` with no options) in a new
   folder, then again with another seed (generation reruns, the models are warm on disk):
   ``default_job_first_s=`` and ``default_job_warm_s=`` (stage seconds, Prefect's start excluded).

Last line: ``score_stage_vs_engine=<stage tokens/s / engine tokens/s>`` (goal: >= 0.75).

Measured on 2 cores, one job at a time, the default command (400 rows, 134,734 tokens scored):

    code                        score stage  stage tokens/s  engine tokens/s  score_stage_vs_engine
    53d64e9 (before issue 39)   246.2 s      547             1,339            0.409
    heap fix                    168.7 s      799             1,771            0.451
    + bf16 hidden pass (ff662c8) 93.7 s      1,438           1,961            0.733
    + frozen heap in conversion  82.6 s      1,632           2,082            0.784   (7daa30d)
    + small ct2 calls in two     83.7 s      1,609           1,694            0.950   (27b9347)

``--default-job`` on the last three: first 98.0 -> 79.6 -> 58.3 s, warm 74.7 -> 58.8 -> 55.5 s
(the last warm run's stages: generate_taxonomy 22.3, generate_text 14.2, condition 7.7, score
10.8, the rest < 1 s). The engine's own rate moved 1,694-2,082 tokens/s between runs minutes
apart, and the ratio with it (0.784 and 0.828 for the same code).

The engine ran after the flow in the same process, so before the heap fix it too paid for the
heap setting training left behind (pipelines/finetune/heap.py). The hidden-state pass (target_sim)
runs in bfloat16 where the CPU has it natively (pipelines/llm/hf.py: model.hidden_dtype; torch's
dynamic int8 ranked target_sim at Spearman 0.76-0.78 against fp32, bf16 at 0.9998), and the
conditional model's conversion to CTranslate2 went from about 10 s to under 1 s once the
converter's per-layer gc.collect() stopped walking the flow's whole heap (embedded.ct2_model_dir).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from benchmarks.common import read_jsonl, shared_datasets


def _t0_rows(n: int) -> list[dict]:
    path = shared_datasets() / "instruct_general" / "t0_selected_combined.part00.jsonl"
    return [{"instruction": r["prompt"], "input": "", "output": r["completion"]} for r in read_jsonl(path, n)]


def run_flow(overrides: list[str], out_dir: Path) -> list[dict]:
    """The flow in this process (Prefect and all) with the command line's task runner, its stage records."""
    from flows.build_dataset import configured_flow, parse_args
    from flows.config import load_config

    cfg = load_config(overrides=[*overrides, f"run.out_dir={out_dir}"])
    return configured_flow(parse_args([]))(config=cfg.model_dump(mode="json"))["stages"]


def stage_tokens(record: dict) -> int:
    return sum(int(u.get("prompt_tokens", 0)) + int(u.get("completion_tokens", 0))
               for u in (record.get("usage") or {}).values())


def engine_rate(rows: list[dict]) -> tuple[float, int]:
    """The int8 scorer's tokens/s on ``rows`` (full prompt form), second of two runs."""
    from flows.config import ModelConfig
    from flows.llm_cache import get_llm
    from pipelines.llm.base import LossRequest

    llm = get_llm(ModelConfig())
    reqs = [LossRequest([{"role": "user", "content": r["instruction"]}], r["output"]) for r in rows]
    llm.loss(reqs[:8])  # load and convert
    best, tokens = 0.0, 0
    for _ in range(2):
        from pipelines.llm.usage import track_usage

        with track_usage() as ledger:
            t = time.perf_counter()
            llm.loss(reqs)
            seconds = time.perf_counter() - t
        tokens = ledger.total().prompt_tokens
        best = max(best, tokens / seconds)
    return best, tokens


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=400, help="T0 rows the flow scores")
    ap.add_argument("--default-job", action="store_true", help="also time the default job, first and warm")
    ap.add_argument("--keep", metavar="DIR", help="run folders here instead of a temporary directory")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="flow-speed-") as tmp:
        work = Path(args.keep or tmp)
        work.mkdir(parents=True, exist_ok=True)
        rows = _t0_rows(args.rows)
        data = work / "t0.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
        records = run_flow(["generate.taxonomy.enabled=false", "generate.text.enabled=false",
                            f"generate.inputs=[{data}]", "run.name=flow-speed"], work / "runs")
        by = {r["stage"]: r for r in records}
        score = by["score"]
        tokens = stage_tokens(score)
        stage_rate = tokens / score["seconds"]
        print("stages: " + ", ".join(f"{r['stage']} {r['seconds']:.1f} s" for r in records))
        for key, u in sorted((score.get("usage") or {}).items()):
            print(f"score usage {key}: {u.get('prompt_tokens', 0)} tokens in {u.get('seconds', 0):.1f} s")
        engine, engine_tokens = engine_rate(rows)
        print(f"score_stage_s={score['seconds']:.1f}")
        print(f"score_stage_tokens={tokens}")
        print(f"score_stage_tokens_per_s={stage_rate:.1f}")
        print(f"engine_tokens_per_s={engine:.1f} ({engine_tokens} tokens, int8, full prompt)")
        if args.default_job:
            first = run_flow(["run.name=default-first"], work / "runs")
            warm = run_flow(["run.name=default-warm", "run.seed=1"], work / "runs")
            for name, recs in (("first", first), ("warm", warm)):
                print(f"default job {name}: " + ", ".join(f"{r['stage']} {r['seconds']:.1f}" for r in recs))
                print(f"default_job_{name}_s={sum(r['seconds'] for r in recs):.1f}")
        print(f"score_stage_vs_engine={stage_rate / engine:.3f}")


if __name__ == "__main__":
    main()
