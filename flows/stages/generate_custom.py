"""Your own generators (``generate.custom``), each a plain object, no subclassing:

    class Paraphrases:                                   # mypkg/gen.py
        name = "paraphrases"
        def generate(self, llm, options, seed):          # -> rows (dicts)
            for text in options["texts"]:
                out = llm.generate([[{"role": "user", "content": f"Paraphrase: {text}"}]])[0]
                yield {"instruction": f"Paraphrase: {text}", "response": out}

    MY_GENERATOR = Paraphrases()
    # generate.custom = ["mypkg.gen:MY_GENERATOR"], generate.options.paraphrases = {texts: [...]}

Each row needs ``instruction`` and ``response`` (``context`` and ``meta`` optional); a row without
them, or one whose generator raised, is a reject with its reason. Rows are written as
``generate_custom/<name>/examples`` shards, which collect gathers like the built-in generators'."""

from __future__ import annotations

import json
import time
from typing import Any

from flows.config import PipelineConfig
from flows.llm_cache import get_llm
from flows.stages.base import StageContext, StageSpec, clear, record
from flows.usage import stage_usage, usage_field
from pipelines.plugins import load_object
from pipelines.schema import make_example
from pipelines.shards import atomic_write_jsonl, atomic_write_text, rejects_file


def load_generators(cfg: PipelineConfig) -> list[Any]:
    out = []
    for path in cfg.generate.custom:
        gen = load_object(path, what="generator")
        if not (isinstance(getattr(gen, "name", None), str) and callable(getattr(gen, "generate", None))):
            raise ValueError(f"generate.custom {path!r} needs a str `name` and a `generate(llm, options, seed)`")
        out.append(gen)
    return out


def _check(cfg: PipelineConfig) -> dict[str, int]:
    return {g.name: 0 for g in load_generators(cfg)}


def to_example(row: Any, source: str) -> dict[str, str]:
    """A generated row as an example; ValueError says which field is wrong."""
    if not isinstance(row, dict):
        raise ValueError(f"a row must be a dict, got {type(row).__name__}")
    for field in ("instruction", "response"):
        if not isinstance(row.get(field), str) or not row[field].strip():
            raise ValueError(f"{field} must be a non-empty string")
    if not isinstance(row.get("context", ""), str) or not isinstance(row.get("meta", {}), dict):
        raise ValueError("context must be a string and meta a mapping")
    return make_example(row["instruction"], row["response"], row.get("context", ""), source, row.get("meta"))


def _run_one(gen: Any, ctx: StageContext) -> dict[str, int]:
    """Run one generator into its folder, shard by shard; a finished one (counts.json) is skipped."""
    from pipelines.schema import to_table
    from pipelines.stream_io import ShardWriter

    cfg, out_dir = ctx.cfg, ctx.run.custom_generator(gen.name)
    done = out_dir / "counts.json"
    if done.exists():
        return json.loads(done.read_text())
    rows, rejects = [], []
    writer = ShardWriter(out_dir / "examples", cfg.run.shard_size)
    for i, row in enumerate(gen.generate(get_llm(cfg.model), cfg.generate.options.get(gen.name, {}), cfg.run.seed)):
        try:
            rows.append(to_example(row, f"generate_custom:{gen.name}"))
        except ValueError as e:
            rejects.append({"generator": gen.name, "row": i, "reason": str(e), "raw": repr(row)[:500]})
        if len(rows) >= cfg.run.shard_size:
            writer.add(to_table(rows))
            rows = []
    writer.add(to_table(rows))
    counts = {"examples": writer.rows, "rejects": len(rejects)}
    if rejects:
        atomic_write_jsonl(rejects, rejects_file(out_dir, gen.name))
    writer.close()
    atomic_write_text(done, json.dumps(counts, sort_keys=True))
    return counts


def _run(ctx: StageContext) -> dict:
    t0 = time.perf_counter()
    per: dict[str, dict[str, int]] = {}
    with stage_usage(ctx.run, STAGE.name) as used:
        for gen in load_generators(ctx.cfg):
            per[gen.name] = _run_one(gen, ctx)
        return record(ctx.run, STAGE.name, t0, counts=per, usage=usage_field(ctx.cfg, used),
                      rows_out=sum(c.get("examples", 0) for c in per.values()),
                      rejects=sum(c.get("rejects", 0) for c in per.values()))


STAGE = StageSpec(name="generate_custom", section="generate.custom", run=_run, makes=("generated",),
                  enabled=lambda cfg: bool(cfg.generate.custom), check=_check,
                  retries=2, reset=clear(lambda run: run.root / "generate_custom"), folders=("generate_custom",),
                  plugins=lambda cfg: {"generate.custom": cfg.generate.custom}, redo="regenerated")
