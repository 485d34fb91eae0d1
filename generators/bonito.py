"""Bonito (arXiv 2402.18334): unannotated passages + a task type -> instruction and response.

    python -m generators.bonito_cli data/passages.jsonl runs/bonito --task-types exqa qa [--mode chat]

    from generators.bonito import run_bonito
    counts = run_bonito("data/passages.jsonl", "runs/bonito", llm, task_types=("exqa", "ynqa"))

Two prompt modes:

* ``bonito`` (``bonito_template.py``): the exact meta-template a Bonito checkpoint was trained on,
  ``"<|tasktype|>\\n" + FULL_TASK_NAME + "\\n<|context|>\\n" + passage.strip() + "\\n<|task|>\\n"``,
  answered as ``instruction + "\\n<|pipe|>\\n" + response`` where the instruction holds the
  literal ``{{context}}``. Use it with a user's Bonito model (a raw string prompt, no chat template).
* ``chat`` (default, ``bonito_chat.py``): any instruct model gets a one-shot example of the task
  type on a fixed passage and answers in two labelled lines (``Task:`` / ``Answer:``).

Rows keep the passage as ``context`` (the instruction without its ``{{context}}`` placeholder;
the template itself stays in ``meta.instruction_template``), the task type and passage id in
``meta``. Unparseable answers, and answers without their task type's form (a yes/no task
answered in prose, a multiple-choice answer that is none of the options, an answer that repeats
its question: ``generators/answer_forms.py``), are retried a bounded number of times, then kept
as rejects with the reason (tallied in counts.json ``reject_reasons``). Duplicate instructions about the same passage are removed (counts in counts.json).

Run folder: ``generated/`` (parsed rows + rejects, the unit of resume), ``examples/`` (after
dedup; dropped rows in ``examples/dropped.jsonl``), ``counts.json``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl

from generators.bonito_chat import (
    ANSWER_ASK,
    ANSWER_HOW,
    CHAT_ASK,
    CHAT_EXAMPLES,
    EXAMPLE_PASSAGE,
    answer_prompt,
    chat_prompt,
    check_answer,
    parse_chat,
)
from generators.bonito_template import CONTEXT, TASK_TYPES, bonito_prompt, parse_bonito, task_type
from generators.dedup import dedup_rows
from generators.grounded import GROUNDED_TYPES, grounded_rules, grounded_task
from generators.levels import (
    derive_seed,
    fingerprint,
    level_rejects,
    plan_items,
    read_items,
    read_level,
)
from generators.parsing import Reject, generate_parsed
from pipelines.llm.base import Prompt, Sampling
from pipelines.progress import StageBar
from pipelines.schema import CORE_SCHEMA, make_example, to_table
from pipelines.shards import (
    atomic_write_jsonl,
    atomic_write_parquet,
    atomic_write_text,
    rejects_file,
    rejects_path,
    shard_path,
    write_shards,
    write_text_if_changed,
)

DEFAULT_SAMPLING = Sampling(temperature=0.5, top_p=0.95, max_tokens=256)  # Bonito's defaults


def build_prompt(item: dict[str, Any], mode: str) -> Prompt:
    if mode == "bonito":
        return bonito_prompt(item["text"], item["task_type"])
    if mode == "chat":
        return chat_prompt(item["text"], item["task_type"])
    raise ValueError(f"unknown mode {mode!r}: use 'chat' or 'bonito'")


def parse(text: str, item: dict[str, Any], mode: str) -> dict[str, Any] | Reject:
    return parse_bonito(text, item) if mode == "bonito" else parse_chat(text, item)


def to_row(parsed: dict[str, Any], item: dict[str, Any], mode: str, source: str) -> dict[str, str]:
    """Parsed answer -> example row. The passage is ``context``; the ``{{context}}`` placeholder
    is taken out of the instruction (and the template kept in meta) so it is not shown twice."""
    template, grounded = parsed["template"], item["task_type"] in GROUNDED_TYPES
    instruction = re.sub(r"\n{3,}", "\n\n", template.replace(CONTEXT, "")).strip()
    meta = {"generator": "grounded" if grounded else "bonito", "mode": "rules" if grounded else mode,
            "task_type": item["task_type"], "task_type_full": {**TASK_TYPES, **GROUNDED_TYPES}[item["task_type"]],
            "text_id": item["text_id"], "sample": item["sample"], "passage_meta": item["passage_meta"],
            **({"label": parsed["label"]} if "label" in parsed else {})}
    if mode == "bonito" and not grounded:
        meta["instruction_template"] = template
        meta["has_context_placeholder"] = CONTEXT in template
    return make_example(instruction or template, parsed["response"], parsed.get("context", item["text"]), source, meta)


def load_passages(
    path: str | Path, max_passages: int | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(passages as {text_id, text, passage_meta}, read rejects). A record's own ``id`` field
    is its text_id when present; else ``<file>:<record>``."""
    from pipelines.io import read_passages

    res = read_passages(path)
    table = res.table.head(max_passages) if max_passages is not None else res.table
    out = []
    for row in table.to_dicts():
        meta = json.loads(row["meta"] or "{}")
        text_id = str(meta.get("id", row["text_id"]))
        out.append({"text_id": text_id, "text": row["text"], "passage_meta": meta})
    return out, res.rejects


PLAN = "plan.json"  # in out_dir; the items (generators.levels.plan_items) in out_dir/generated


def plan_bonito(
    passages_path: str | Path,
    out_dir: str | Path,
    *,
    model: str,
    task_types: Sequence[str] = ("exqa",),
    samples_per_passage: int = 1,
    mode: str = "chat",
    seed: int = 0,
    shard_size: int = 32,
    max_passages: int | None = None,
    max_tokens: int = DEFAULT_SAMPLING.max_tokens,
    temperature: float = DEFAULT_SAMPLING.temperature,
    top_p: float = DEFAULT_SAMPLING.top_p,
    retries: int = 2,
) -> dict[str, Any]:
    """Step 1 of 3 (:func:`run_bonito` runs all three; a flow maps step 2 over workers): read
    the passages, write the work items (``generated/items.jsonl``) and the settings
    (``plan.json``), delete generated shards whose items or settings changed. Returns the plan,
    whose ``todo`` lists the shards to generate (``model``: the model's name, part of every
    shard's fingerprint and of the rows' ``source``)."""
    if mode not in ("chat", "bonito"):
        raise ValueError(f"unknown mode {mode!r}: use 'chat' or 'bonito'")
    types = [task_type(t) for t in task_types]
    out = Path(out_dir)
    generated = out / "generated"
    generated.mkdir(parents=True, exist_ok=True)
    passages, read_rejects = load_passages(passages_path, max_passages)
    if read_rejects:
        atomic_write_jsonl(read_rejects, rejects_file(out, "passages"))
    items = [
        {**p, "task_type": t, "sample": s}
        for p in passages
        for t in types
        for s in range(samples_per_passage)
    ]
    settings = {"mode": mode, "model": model, "seed": seed, "temperature": temperature, "top_p": top_p,
                "max_tokens": max_tokens, "retries": retries, "shard_size": shard_size}
    prompts = fingerprint([CHAT_ASK, CHAT_EXAMPLES, EXAMPLE_PASSAGE, ANSWER_ASK, ANSWER_HOW, grounded_rules()])
    params = {"prompts": prompts, "mode": mode, "model": model, "seed": seed, "t": temperature, "p": top_p,
              "mt": max_tokens, "r": retries}
    items, stale, todo = plan_items(items, generated, shard_size, params)
    for stats in generated.glob("stats-*.json"):  # of a shard that was deleted, or never written
        if not shard_path(generated, int(stats.stem.split("-")[1])).exists():
            stats.unlink()
    plan = {"settings": settings, "passages": len(passages), "passage_rejects": len(read_rejects),
            "items": len(items), "shards": -(-len(items) // shard_size), "stale_shards": stale, "todo": todo}
    write_text_if_changed(json.dumps(plan, indent=1, sort_keys=True), out / PLAN)
    return plan


def bonito_shard(out_dir: str | Path, index: int, llm: Any) -> int:
    """Step 2: generate shard ``index`` of the plan (skipped when on disk); returns its rows.
    Any process can run it: it reads the plan and its items from ``out_dir``. Writes the shard's
    call counts (``stats-NNNNN.json``) and rejects before the shard, whose presence marks it done."""
    out = Path(out_dir)
    generated = out / "generated"
    path = shard_path(generated, index)
    if path.exists():
        return pl.scan_parquet(path).select(pl.len()).collect().item()
    s = json.loads((out / PLAN).read_text(encoding="utf-8"))["settings"]
    mode, seed, temperature = s["mode"], s["seed"], s["temperature"]
    retries = s["retries"]
    part = read_items(generated, index, s["shard_size"])
    source = f"bonito(mode={mode}, model={s['model']}, seed={seed}, temperature={temperature})"
    stats = {"generated": 0, "retried": 0, "answered_separately": 0}
    sampling = Sampling(temperature=temperature, top_p=s["top_p"], max_tokens=s["max_tokens"],
                        seed=derive_seed(seed, "bonito", part))
    # Grounded types are built from the passage (no LLM); the rest go to the model.
    asks = [i for i, it in enumerate(part) if it["task_type"] not in GROUNDED_TYPES]
    res = generate_parsed(llm, [part[i] for i in asks], lambda it: build_prompt(it, mode),
                          lambda t, it: parse(t, it, mode), sampling, retries)
    results: list = [grounded_task(it, seed) if it["task_type"] in GROUNDED_TYPES else None for it in part]
    for i, r in zip(asks, res.results, strict=True):
        results[i] = r
    stats["generated"] += res.generated
    stats["retried"] += res.retried
    # Chat mode: tasks written without an answer get it from a second, batched call.
    missing = [i for i, r in enumerate(results) if not isinstance(r, Reject) and r["response"] is None]
    if missing:
        pairs = [(part[i], results[i]["template"]) for i in missing]
        ans = generate_parsed(llm, pairs, lambda p: answer_prompt(*p), lambda t, p: check_answer(t, p[0], t, p[1]),
                              sampling, retries)
        stats["generated"] += ans.generated
        stats["retried"] += ans.retried
        stats["answered_separately"] += len(missing)
        for i, a in zip(missing, ans.results, strict=True):
            if isinstance(a, Reject):
                a.reason = f"answer call: {a.reason}"
                a.extra["task"] = results[i]["template"]
                results[i] = a
            else:
                results[i] = {**results[i], "response": a}
    rows, rejects = [], []
    for item, r in zip(part, results, strict=True):
        if isinstance(r, Reject):
            rejects.append(r.to_dict(text_id=item["text_id"], task_type=item["task_type"], sample=item["sample"]))
        else:
            rows.append(to_row(r, item, mode, f"grounded(seed={seed})" if item["task_type"] in GROUNDED_TYPES else source))
    table = to_table(rows)
    atomic_write_text(generated / f"stats-{index:05d}.json", json.dumps(stats, sort_keys=True))
    if rejects:
        atomic_write_jsonl(rejects, rejects_path(generated, index))
    atomic_write_parquet(table, path)
    return table.height


def finish_bonito(out_dir: str | Path, near_threshold: float = 0.8) -> dict[str, Any]:
    """Step 3, once every shard is there: dedup within each passage into ``examples/``, count
    (``counts.json``; call counts summed over every shard, whichever process made it)."""
    out = Path(out_dir)
    generated = out / "generated"
    plan = json.loads((out / PLAN).read_text(encoding="utf-8"))
    missing = [i for i in range(plan["shards"]) if not shard_path(generated, i).exists()]
    if missing:
        raise RuntimeError(f"bonito shards {missing[:5]} of {generated} were not generated")
    counts: dict[str, Any] = {k: plan[k] for k in ("passages", "passage_rejects", "items")}
    counts.update(generated=0, retried=0, answered_separately=0)
    for stats in sorted(generated.glob("stats-*.json")):
        for k, v in json.loads(stats.read_text(encoding="utf-8")).items():
            counts[k] += v
    generated_rows = read_level(generated, CORE_SCHEMA)
    # Dedup within a passage: the same question about two passages is two examples.
    with_text = (
        generated_rows.with_columns(
            text_id=generated_rows["meta"].map_elements(lambda m: json.loads(m)["text_id"], return_dtype=str)
        )
        if generated_rows.height
        else generated_rows
    )
    kept, dropped, dedup_counts = dedup_rows(
        with_text, "instruction", "id", near_threshold, group="text_id" if generated_rows.height else None
    )
    if "text_id" in kept.columns:
        kept = kept.drop("text_id")
    write_shards(kept, out / "examples", plan["settings"]["shard_size"])
    atomic_write_jsonl(dropped.to_dicts(), out / "examples" / "dropped.jsonl")
    rejects = level_rejects(generated)
    counts.update(
        rows=generated_rows.height,
        rejects=len(rejects),
        reject_reasons=_tally(r.get("reason", "") for r in rejects),
        dedup=dedup_counts,
        deduplicated=dedup_counts["exact"] + dedup_counts["near"],
        examples=kept.height,
        shards={"rows": generated_rows.height, "rejects": len(rejects), "shards": plan["shards"],
                "skipped_shards": plan["shards"] - len(plan["todo"]), "stale_shards": plan["stale_shards"]},
    )
    counts["notes"] = bonito_notes(counts)
    atomic_write_text(out / "counts.json", json.dumps(counts, indent=2, sort_keys=True))
    return counts


def run_bonito(
    passages_path: str | Path,
    out_dir: str | Path,
    llm: Any,
    *,
    near_threshold: float = 0.8,
    progress: bool = True,
    **settings: Any,
) -> dict[str, Any]:
    """Generate ``samples_per_passage`` tasks of each type per passage into ``out_dir``, in this
    process: :func:`plan_bonito`, :func:`bonito_shard` for every shard, :func:`finish_bonito`.

    Returns (and writes to ``counts.json``): passages, generated (LLM answers), rows, rejects,
    deduplicated, examples, and the per-shard resume counts.
    """
    model = getattr(llm, "model_id", getattr(llm, "name", type(llm).__name__))
    plan = plan_bonito(passages_path, out_dir, model=model, **settings)  # settings: plan_bonito's keywords
    shard_size = settings.get("shard_size", 32)
    # Tasks done per shard; generation batches and tok/s in between (pipelines.progress).
    bar = StageBar("bonito", plan["items"], enabled=progress, unit="task")
    try:
        with bar.active():
            for index in range(plan["shards"]):
                bonito_shard(out_dir, index, llm)
                bar(min(shard_size, plan["items"] - index * shard_size))
    finally:
        bar.close()
    return finish_bonito(out_dir, near_threshold)


def bonito_notes(counts: dict[str, Any]) -> list[str]:
    """What was cut or left out, as sentences with counts (stage record and run report)."""
    notes = []
    if counts.get("passage_rejects"):
        notes.append(f"{counts['passage_rejects']} passages rejected on reading (passage rejects file)")
    if counts.get("rejects"):
        reasons = "; ".join(f"{k}: {v}" for k, v in counts.get("reject_reasons", {}).items())
        notes.append(f"{counts['rejects']} of {counts['items']} tasks rejected after retries ({reasons})")
    if counts.get("deduplicated"):
        notes.append(f"{counts['deduplicated']} duplicate tasks about the same passage removed "
                     "(examples/dropped.jsonl)")
    return notes


def _tally(values) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))
