"""``select.auto``: rankings the choose stage (flows/stages/choose.py) tries against the default,
each with a short proxy fine-tune graded on held-out target rows (flows.config re-exports it).

    [select]
    auto = ["target_sim", "color", "target_sim+color"]   # a score, or scores fused with "+"
    auto = false                                         # off: the guard below does not run either

Left unset, it is the guard: ``["longest"]`` (the rows with the longest responses, a hard
baseline) when the target holds out enough rows to grade on (``GUARD_MIN_ROWS`` after the split),
so every run with a real target checks its own selection against random picks and the length
baseline, and ships the default unless one of them wins beyond the random arms' spread (random
picks win when their mean beats every ranking by more than it: the last top_k becomes a seeded
``ratio`` of the same size).
    proxy = {steps = 16, seeds = 3, share = 0.5, batch_size = 4, max_length = 256, dtype = "auto"}

A candidate replaces the ranking of the last ``top_k`` step of ``select.steps`` (same k or
fraction): ``"color"`` ranks by score_color, largest first; ``"target_sim+color"`` by the
reciprocal rank fusion of both columns."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from instruct_selectors.steps.base import SelectionStep
from instruct_selectors.steps.top_k import TopK
from pydantic import BaseModel, ConfigDict, Field

from pipelines.finetune.methods import METHOD_CHOICES

DEFAULT = "default"  # the configured steps, unchanged: what a run keeps unless a candidate wins
# The length baseline: the rows with the longest responses (a hard baseline for instruction data,
# arXiv 2402.04833). Its column is derived from the rows as select reads them (selection_pass).
LONGEST, LENGTH_COLUMN = "longest", "response_chars"
GUARD = (LONGEST,)  # what select.auto tries when left unset and the target holds out enough rows
RANDOM = "random"  # the random arms, as a candidate: shipped when picking at random beats every ranking
GUARD_MIN_ROWS = 30  # held-out rows the proxies are graded on, at least, for the guard to run


class ProxyConfig(BaseModel):
    """The short fine-tunes that grade each candidate ranking (and the random arms beside them)."""

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(16, gt=0, description="optimizer steps per proxy fine-tune")
    seeds: int = Field(3, ge=2, description="random arms (seeds run.seed + k): their spread is the noise a "
                       "candidate must beat")
    share: float = Field(0.5, gt=0, lt=1, description="share of the held-out target rows the proxies are graded "
                         "on; the train stage evaluates on the rest")
    method: Literal[METHOD_CHOICES] = Field("lora", description="how the proxies fine-tune")
    batch_size: int = Field(4, gt=0, description="rows per step, in one forward pass (no gradient checkpointing: "
                            "short rows, and a proxy is about speed)")
    max_length: int = Field(256, gt=8, description="tokens per row at most (and model.max_length at most)")
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="auto: bfloat16 autocast where the chip multiplies it natively (a GPU that supports "
        "it, a CPU with AVX512-BF16 or AMX), else float32; 16 LoRA steps on SmolLM2 took 21 s against 52 s on "
        "such a CPU, and benchmarks.selection's arms trained either way reached the same verdicts")


def candidate_columns(candidate: str, owners: Mapping[str, Any], computed: Sequence[str]) -> list[str]:
    """The score columns a candidate ranks by ("a+b": both, fused); raises naming a bad part.
    ``longest`` ranks by the response's length in characters."""
    by_name = {**{s.name: c for c, s in owners.items() if s.scalar}, LONGEST: LENGTH_COLUMN}
    columns = []
    for part in candidate.split("+"):
        name = part.strip()
        if name not in by_name or (name not in computed and name != LONGEST):
            raise ValueError(f"select.auto candidate {candidate!r}: {name!r} is not a score this run computes "
                             f"(scores: {', '.join(computed)})")
        columns.append(by_name[name])
    return list(dict.fromkeys(columns))


def last_top_k(steps: Sequence[SelectionStep]) -> int:
    """Index of the last top_k step (the ranking a candidate replaces); raises when there is none."""
    found = [i for i, step in enumerate(steps) if isinstance(step, TopK)]
    if not found:
        raise ValueError("select.auto replaces the ranking of a top_k step, and select.steps has none")
    return found[-1]


def with_ranking(steps: Sequence[SelectionStep], columns: Sequence[str]) -> list[SelectionStep]:
    """``steps`` with the last top_k ranking by ``columns`` instead (same count options)."""
    rank = {"column": columns[0]} if len(columns) == 1 else {"fuse": list(columns)}
    return _replace_last_top_k(steps, lambda count: TopK(**rank, **count))


def with_random_pick(steps: Sequence[SelectionStep], seed: int) -> list[SelectionStep]:
    """``steps`` with the last top_k replaced by a seeded random pick of the same size (``ratio``)."""
    from instruct_selectors.steps.ratio import Ratio

    return _replace_last_top_k(steps, lambda count: Ratio(**count, seed=seed))


def _replace_last_top_k(steps: Sequence[SelectionStep], make) -> list[SelectionStep]:
    """``steps`` with the last top_k replaced by ``make(count)``, ``count`` its k / fraction / tau."""
    i = last_top_k(steps)
    count = {k: v for k, v in steps[i].spec()["top_k"].items() if k in ("k", "fraction", "tau")}
    return [*steps[:i], make(count), *steps[i + 1:]]
