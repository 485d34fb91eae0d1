"""What every GLAN level shares: its settings, the LLM calls it counts, what it returns, and the runner.

    settings = GlanSettings(seed=1)
    run = run_glan_level("syllabi", items, folder, {"sessions": 6}, params, llm, settings, shard_fn)

A level runs in three steps, so its shards can run in other processes (``settings.map_shards``:
the flow maps them over its task runner, Dask workers included):

1. :func:`plan_glan_level` (the caller's process): writes the level's items (``items.jsonl``) and
   what its shards share (``plan.json``: level, settings, the level's own arguments), deletes the
   shards whose input changed (``generators.levels.prune_level``), and says which shards to make;
2. :func:`run_glan_shard` (any process, given the model): one shard from the folder alone, its
   calls (``calls-NNNNN.json``) and rejects written before the shard, whose presence marks it done;
3. :func:`finish_glan_level`: the level's table and counts.

Every path reads the items back from ``items.jsonl``, so a shard is the same bytes whichever
process made it. The levels themselves (one function each) are in ``glan_levels.py``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import astuple, dataclass, field, fields
from pathlib import Path
from typing import Any

import polars as pl

from generators.glan_prompts import LEVEL_SCHEMAS, PROMPTS_FINGERPRINT, ask_for_json
from generators.glan_schema import PAPER_TEMPERATURE, SCHEMAS
from generators.levels import derive_seed, plan_items, read_items, read_level
from generators.parsing import Attempts, Reject, is_clean_json
from pipelines.llm.base import Messages, Sampling
from pipelines.progress import StageBar
from pipelines.shards import (
    atomic_write_jsonl,
    atomic_write_parquet,
    atomic_write_text,
    list_shards,
    rejects_path,
    shard_path,
    write_text_if_changed,
)

PLAN = "plan.json"


@dataclass(frozen=True)
class GlanSettings:
    """Sampling and sharding that every LLM level shares (each level's sizes are its own arguments)."""

    seed: int = 0
    shard_size: int = 16
    max_tokens: int = 256
    temperature: float | None = None  # None: the paper's value per level (PAPER_TEMPERATURE)
    top_p: float = 0.95
    retries: int = 2
    progress: bool = False
    structured: bool = False  # the backend constrains decoding to a JSON schema (LLM.structured_output)
    # (level, folder, shard indexes) -> None: runs the shards elsewhere (the flow's task runner);
    # None runs them here, one after another. Not part of what a shard is made from.
    map_shards: Callable[[str, Path, list[int]], None] | None = field(default=None, compare=False, repr=False)

    def shared(self) -> dict[str, Any]:
        """What a shard's worker needs of these settings (plan.json)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("map_shards", "progress")}

    def sampling(self, level: str, max_tokens: int, items: Sequence[Any]) -> Sampling:
        """Seeded by the run seed, the level and what is asked, so a rerun asks the same. With a
        ``structured`` backend the JSON levels ask for their schema (LEVEL_SCHEMAS)."""
        t = PAPER_TEMPERATURE[level] if self.temperature is None else self.temperature
        seed = derive_seed(self.seed, level, list(items))
        schema = LEVEL_SCHEMAS.get(level) if self.structured else None
        return Sampling(temperature=t, top_p=self.top_p, max_tokens=max_tokens, seed=seed, json_schema=schema)

    def prompt(self, level: str, messages: Messages) -> Messages:
        """The level's prompt, asking for its JSON schema when decoding is constrained to it."""
        schema = LEVEL_SCHEMAS.get(level) if self.structured else None
        return messages if schema is None else ask_for_json(messages, schema)


@dataclass(frozen=True)
class Calls:
    """LLM answers a level asked for, summed over the shards it generated (none when resumed)."""

    generated: int = 0
    retried: int = 0
    concept_calls: int = 0  # syllabi only: sessions whose key concepts took a second query
    # JSON levels (subjects, syllabi): answers read, and those that were not a clean JSON document
    # and went through extraction/repair or the line format.
    json_answers: int = 0
    repaired: int = 0
    # Subjects or sessions an answer gave beyond what was asked, left out (said in counts.json).
    surplus: int = 0

    @classmethod
    def of(cls, attempts: Attempts, concept_calls: int = 0, repairs: RepairCount | None = None,
           surplus: int = 0) -> Calls:
        r = repairs or RepairCount()
        return cls(attempts.generated, attempts.retried, concept_calls, r.answers, r.repaired, surplus)

    def __add__(self, other: Calls) -> Calls:
        return Calls(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))


@dataclass
class RepairCount:
    """Counts, for a JSON level's parser, how many answers needed repair (see :func:`counting`)."""

    answers: int = 0
    repaired: int = 0

    def counting(self, parse: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
        def wrapped(text: str, item: Any) -> Any:
            self.answers += 1
            self.repaired += not is_clean_json(text)
            return parse(text, item)

        return wrapped


@dataclass
class LevelRun:
    """What a level returns: its whole table (shards kept from earlier runs included) and counts."""

    table: pl.DataFrame
    outcome: dict[str, int]  # LevelOutcome.as_dict(): rows, rejects, shards, skipped/stale shards
    calls: Calls


def at_least(parse: Callable[[str, Any], Any], asked: int, what: str) -> Callable[[str, Any], Any]:
    """``parse`` whose list answer must hold the ``asked`` items the prompt asked for: fewer is a
    Reject ("fewer <what> than asked", with ``got`` and ``asked``), so the item is re-asked within
    the retry bound and then kept in the level's rejects instead of going on short."""

    def checked(text: str, item: Any) -> Any:
        value = parse(text, item)
        if isinstance(value, list) and len(value) < asked:
            return Reject(f"fewer {what} than asked", text, {"got": len(value), "asked": asked})
        return value

    return checked


def model_name(llm: Any) -> str:
    """The name a level records for the model (in its fingerprint and the examples' ``source``)."""
    return getattr(llm, "model_id", getattr(llm, "name", type(llm).__name__))


def run_glan_level(
    name: str,
    items: list[Any],
    folder: Path,
    kwargs: dict[str, Any],
    params: dict[str, Any],
    llm: Any,
    settings: GlanSettings,
    shard_fn: Callable[[Path, int, Any], int],
) -> LevelRun:
    """Plan the level, make its missing shards (``settings.map_shards``, else here with a bar,
    ``shard_fn(folder, index, llm)``), and finish it."""
    todo, stale, items = plan_glan_level(name, items, folder, kwargs, params, model_name(llm), settings)
    if todo and settings.map_shards is not None:
        settings.map_shards(name, folder, todo)
    elif todo:
        size = settings.shard_size
        # Items done per shard; generation batches and tok/s in between (pipelines.progress).
        bar = StageBar(f"glan {name}", len(items), enabled=settings.progress)
        try:
            with bar.active():
                bar(len(items) - sum(len(items[i * size:(i + 1) * size]) for i in todo))  # kept shards
                for index in todo:
                    shard_fn(folder, index, llm)
                    bar(len(items[index * size:(index + 1) * size]))
        finally:
            bar.close()
    return finish_glan_level(name, folder, todo, stale)


def plan_glan_level(
    name: str, items: list[Any], folder: Path, kwargs: dict[str, Any], params: dict[str, Any], model: str,
    settings: GlanSettings,
) -> tuple[list[int], int, list[Any]]:
    """Write the level's items and plan, delete its shards whose input changed; returns (the shards
    to make, how many were stale, the items as every worker reads them back).

    A shard's fingerprint holds its items and what every level's fingerprint holds (model, seed,
    prompts), so changing any of them regenerates the level."""
    params = {**params, "model": model, "seed": settings.seed, "prompts": PROMPTS_FINGERPRINT,
              **({"structured": True} if settings.structured else {})}
    items, stale, todo = plan_items(items, Path(folder), settings.shard_size, params)
    plan = json.dumps({"level": name, "settings": settings.shared(), "kwargs": kwargs}, indent=1, sort_keys=True)
    write_text_if_changed(plan + "\n", Path(folder) / PLAN)
    return todo, stale, items


_Chunk = Callable[..., tuple[pl.DataFrame, list[dict[str, Any]], Calls]]


def run_glan_shard(folder: str | Path, index: int, llm: Any, chunks: dict[str, _Chunk]) -> int:
    """Make shard ``index`` of the level planned in ``folder`` (skipped when on disk); its rows.
    ``chunks``: the level functions, by level name (glan_levels.CHUNKS)."""
    folder = Path(folder)
    path = shard_path(folder, index)
    if path.exists():
        return pl.scan_parquet(path).select(pl.len()).collect().item()
    plan = json.loads((folder / PLAN).read_text(encoding="utf-8"))
    settings = GlanSettings(**plan["settings"])
    part = read_items(folder, index, settings.shard_size)
    table, rejects, calls = chunks[plan["level"]](part, llm=llm, settings=settings, **plan["kwargs"])
    atomic_write_text(_calls_path(folder, index), json.dumps(calls.__dict__, sort_keys=True) + "\n")
    if rejects:
        atomic_write_jsonl(rejects, rejects_path(folder, index))
    atomic_write_parquet(table, path)
    return table.height


def _calls_path(folder: Path, index: int) -> Path:
    return folder / f"calls-{index:05d}.json"


def finish_glan_level(name: str, folder: Path, made: list[int], stale: int) -> LevelRun:
    """The level's table and counts; the calls are those of the shards made now (``made``)."""
    shards = list_shards(folder)
    rejects = 0
    for p in shards:
        rej = rejects_path(folder, int(p.stem.split("-")[1]))
        rejects += sum(1 for _ in rej.open(encoding="utf-8")) if rej.exists() else 0
    table = read_level(folder, SCHEMAS.get(name))
    calls = sum((Calls(**json.loads(_calls_path(folder, i).read_text())) for i in made), Calls())
    outcome = {"rows": table.height, "rejects": rejects, "shards": len(shards),
               "skipped_shards": len(shards) - len(made), "stale_shards": stale}
    return LevelRun(table, outcome, calls)
