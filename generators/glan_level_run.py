"""What every GLAN level shares: its settings, the LLM calls it counts, what it returns, and the runner.

    settings = GlanSettings(seed=1)
    run = run_glan_level("syllabi", items, folder, process, params, llm, settings)   # -> LevelRun

:func:`run_glan_level` is :func:`generators.levels.run_level` with a progress bar and what every
level's fingerprint holds (model, seed, prompts), so changing any of them regenerates the level.
The levels themselves (one function each) are in ``glan_levels.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any

import polars as pl

from generators.glan_prompts import LEVEL_SCHEMAS, PROMPTS_FINGERPRINT, ask_for_json
from generators.glan_schema import PAPER_TEMPERATURE, SCHEMAS
from generators.levels import derive_seed, read_level, run_level
from generators.parsing import Attempts, Reject, is_clean_json
from pipelines.llm.base import Messages, Sampling
from pipelines.progress import StageBar


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


_Chunk = Callable[[Sequence[Any]], tuple[pl.DataFrame, list[dict[str, Any]], Calls]]


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
    process: _Chunk,
    params: dict[str, Any],
    llm: Any,
    settings: GlanSettings,
) -> LevelRun:
    """:func:`run_level` with a bar, plus what every level's fingerprint holds (model, seed,
    prompts), so changing any of them regenerates the level; sums the calls shard by shard."""
    calls: list[Calls] = []

    def counted(chunk: Sequence[Any]) -> tuple[pl.DataFrame, list[dict[str, Any]]]:
        table, rejects, used = process(chunk)
        calls.append(used)
        return table, rejects

    params = {**params, "model": model_name(llm), "seed": settings.seed, "prompts": PROMPTS_FINGERPRINT,
              **({"structured": True} if settings.structured else {})}
    # Items done per shard; generation batches and tok/s in between (pipelines.progress).
    bar = StageBar(f"glan {name}", len(items), enabled=settings.progress)
    try:
        with bar.active():
            outcome = run_level(items, folder, settings.shard_size, counted, params=params, progress=bar)
    finally:
        bar.close()
    return LevelRun(read_level(folder, SCHEMAS.get(name)), outcome.as_dict(), sum(calls, Calls()))
