"""What a run will cost before it runs (``python -m flows.build_dataset ... --estimate``): model
calls and tokens per stage, a time from this machine's measured rates, and money where
``model.price_per_million`` is set. Nothing runs and no model loads but its tokenizer.

* score: exact where it can be. Each pass the configured scores need (instruct_selectors.score's
  plan) reads every row once, so its tokens are the rows' lengths under that pass's prompt form,
  counted with the model's own tokenizer and truncation on up to ``SAMPLE_ROWS`` input rows and
  scaled to all of them. Generated rows (not made yet) count as many as the generators are asked
  for, at the tokens and calls per row an earlier run's score stage measured.
* generators: the rows their settings ask for (GLAN: one answer per question; Bonito: passages x
  task types x samples); calls and tokens per row as an earlier run measured them (retries and
  repairs included), else the calls asked with ``max_tokens`` completion tokens each (a ceiling).
* time: tokens / tokens-per-second that earlier runs measured for that stage and model on this
  machine (``rates.json`` under the cache, written at the end of every run); "no rate" before.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from flows.config import PipelineConfig, resolve_path
from pipelines.llm.embedded import cache_dir, load_tokenizer

SAMPLE_ROWS = 1000
RATES = "rates.json"


def rate_key(stage: str, backend_key: str) -> str:
    """``score|hf:conditional``: a conditional model's folder hash is dropped, so runs share a rate."""
    model = re.sub(r"(conditional/cond)-[0-9a-f]+", r"\1", backend_key)
    return f"{stage}|{model}"


def rates_path() -> Path:
    return cache_dir() / RATES


def update_rates(records: list[dict[str, Any]], path: Path | None = None) -> None:
    """Keep, per stage and model, what a finished run measured: tokens per second, tokens per
    call, and tokens per row the stage took in (the score stage's, for rows not made yet)."""
    from pipelines.shards import atomic_write_text

    path = path or rates_path()
    rates = json.loads(path.read_text()) if path.exists() else {}
    for rec in records:
        for key, u in (rec.get("usage") or {}).items():
            tokens = int(u.get("prompt_tokens", 0)) + int(u.get("completion_tokens", 0))
            if not tokens or not u.get("seconds"):
                continue
            rates[rate_key(rec["stage"], key)] = {
                "tokens_per_s": round(tokens / float(u["seconds"]), 2),
                "tokens_per_call": round(tokens / max(1, int(u.get("calls") or 1)), 2),
                "tokens_per_row": round(tokens / rec["rows_in"], 2) if rec.get("rows_in") else None,
                "calls_per_row_out": round(int(u.get("calls") or 0) / rec["rows_out"], 3) if rec.get("rows_out") else None}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(rates, indent=1, sort_keys=True))


def _inputs(cfg: PipelineConfig):
    """(every input row counted, a sample table of up to SAMPLE_ROWS of them)."""
    import polars as pl

    from flows.inputs import expand_inputs
    from pipelines.io import read_examples

    tables = [read_examples(resolve_path(p), strict_encoding=cfg.io.strict_encoding).table
              for p in expand_inputs(cfg.generate.inputs)]
    total = sum(t.height for t in tables)
    sample = pl.concat(tables).head(SAMPLE_ROWS) if tables else None
    return total, sample


def generator_calls(cfg: PipelineConfig) -> dict[str, dict[str, int]]:
    """{stage: {"calls", "max_completion_tokens", "rows"}} the generators' settings ask for."""
    out = {}
    g = cfg.generate
    if g.taxonomy.enabled:
        from generators.taxonomy import load_taxonomy

        t = g.taxonomy
        disciplines = len(load_taxonomy(resolve_path(t.path)))
        d = min(disciplines, t.max_disciplines) if t.max_disciplines else disciplines
        subjects = d * t.subjects_per_discipline
        questions = subjects * t.questions_per_syllabus
        calls = 2 * d + subjects + 2 * questions  # subject queries (2 a discipline), syllabi, questions, answers
        out["generate_taxonomy"] = {"calls": calls, "max_completion_tokens": calls * t.max_tokens, "rows": questions}
    if g.text.enabled:
        from pipelines.io import read_passages

        t = g.text
        passages = read_passages(resolve_path(t.path)).table.height
        passages = min(passages, t.max_passages) if t.max_passages else passages
        calls = passages * len(t.task_types) * t.samples_per_passage
        out["generate_text"] = {"calls": calls, "max_completion_tokens": calls * t.max_tokens, "rows": calls}
    return out


def plan_passes_of(cfg: PipelineConfig) -> list:
    from instruct_selectors.score import plan_passes

    return plan_passes(cfg.score.specs())


def score_tokens(cfg: PipelineConfig, sample, rows: int, tokenizer) -> dict[str, tuple[int, int]]:
    """(tokens, rows) each score pass reads over ``rows`` rows, from ``sample``'s lengths (a pass
    over rows with a context only counts those)."""
    from instruct_selectors.score import plan_passes

    from pipelines.llm.nll import encode

    if sample is None or sample.is_empty() or not rows:
        return {}
    out = {}
    scale = rows / sample.height
    for p in plan_passes(cfg.score.specs()):
        n = read = 0
        for instr, ctx, resp in sample.select("instruction", "context", "response").iter_rows():
            if p.only_with_context and not ctx:
                continue
            n += encode(tokenizer, p.request(instr, ctx or "", resp), cfg.model.max_length).length
            read += 1
        out[p.name] = (round(n * scale), round(read * scale))
    return out


def estimate(cfg: PipelineConfig) -> dict[str, Any]:
    """The estimate as data: per stage calls, tokens, seconds (or None), cost (or None)."""

    rates = json.loads(rates_path().read_text()) if rates_path().exists() else {}
    model_key = f"{cfg.model.backend if cfg.model.backend != 'auto' else 'hf'}:{cfg.model.model}"
    price = cfg.model.price_per_million
    stages: dict[str, dict[str, Any]] = {}
    gens = generator_calls(cfg)
    generated = sum(g["rows"] for g in gens.values())
    for stage, g in gens.items():
        measured = rates.get(rate_key(stage, model_key)) or {}
        if measured:  # as many calls per row made, as long prompts and answers, as last time
            if measured.get("calls_per_row_out"):
                g = {**g, "calls": round(g["rows"] * measured["calls_per_row_out"])}
            tokens, what = round(g["calls"] * measured["tokens_per_call"]), "prompt + completion, measured per call"
        else:
            tokens, what = g["max_completion_tokens"], "completion, at most"
        stages[stage] = {"calls": g["calls"], "tokens": tokens, "tokens_are": what,
                         "seconds": round(tokens / measured["tokens_per_s"], 1) if measured else None}
    input_rows, sample = _inputs(cfg)
    rows = input_rows + generated
    if cfg.score.specs() and rows:
        passes = score_tokens(cfg, sample, input_rows, load_tokenizer(cfg.model.model)) if input_rows else {}
        measured = {k.split("|", 1)[1]: v for k, v in rates.items() if k.startswith("score|")}
        per_row = sum((v.get("tokens_per_row") or 0) for v in measured.values())
        per_row_calls = sum(round(v["tokens_per_row"] / v["tokens_per_call"], 3)
                            for v in measured.values() if v.get("tokens_per_row"))
        if generated:  # rows not made yet: as many tokens and calls a row as the last run's score stage
            passes["generated rows"] = ((round(generated * per_row), round(generated * per_row_calls)) if per_row
                                        else (None, generated * len(plan_passes_of(cfg))))
        known = [t for t, _ in passes.values()]
        tokens = sum(known) if None not in known else None
        speed = [v["tokens_per_s"] for v in measured.values()]
        stages["score"] = {"calls": sum(c for _, c in passes.values()), "tokens": tokens, "tokens_are": "read",
                           "passes": {k: t for k, (t, _) in passes.items()},
                           "seconds": round(tokens / (sum(speed) / len(speed)), 2) if tokens and speed else None}
    for name, s in stages.items():  # scores read prompt tokens only; a generator's split is not known: at most
        per_million = (price.prompt if name == "score" else max(price.prompt, price.completion)) if price else None
        s["cost"] = round(s["tokens"] * per_million / 1e6, 4) if price and s["tokens"] is not None else None
    return {"rows": rows, "input_rows": input_rows, "generated_rows_asked": generated, "stages": stages}


def estimate_text(est: dict[str, Any]) -> str:
    lines = [f"estimate: {est['rows']:,} rows to score ({est['input_rows']:,} from inputs, "
             f"{est['generated_rows_asked']:,} asked of the generators)",
             f"{'stage':<18} {'calls':>9} {'tokens':>12}  {'seconds':>9}  cost"]
    for stage, s in est["stages"].items():
        secs = f"{s['seconds']:>9,.1f}" if s["seconds"] is not None else f"{'no rate':>9}"
        cost = f"{s['cost']:,.4f}" if s.get("cost") is not None else "-"
        tokens = f"{s['tokens']:>12,}" if s["tokens"] is not None else f"{'no rate':>12}"
        lines.append(f"{stage:<18} {s['calls']:>9,} {tokens}  {secs}  {cost}   ({s['tokens_are']})")
    lines.append("seconds: from this machine's earlier runs (rates.json under the cache); 'no rate' until one ran")
    return "\n".join(lines)
