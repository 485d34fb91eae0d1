"""What a stage is: a name, its config section, what it needs and makes in the run folder, and
``run(ctx) -> record``.

A stage reads its inputs from the run folder, writes its outputs there (shard by shard,
atomically) and returns a small JSON-able record (counts in/out, rejects, seconds, outputs), also
saved as ``stages/<stage>.json``. Stages run and test without Prefect; ``flows/build_dataset.py``
wraps each in a task and ``flows/pipeline.py`` lists them in order."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from flows.config import PipelineConfig
from flows.run_folder import RunFolder


@dataclass(frozen=True)
class StageContext:
    """What a stage runs with: the config, the run folder, and the records of stages before it."""

    cfg: PipelineConfig
    run: RunFolder
    records: Mapping[str, dict[str, Any]] = field(default_factory=dict)

    def record(self, stage: str) -> dict[str, Any] | None:
        """An earlier stage's record: from this run, else from the run folder."""
        return self.records.get(stage) or self.run.load_record(stage)


class Stage(Protocol):
    name: str
    section: str  # the config section it reads, e.g. "generate.taxonomy"
    needs: tuple[str, ...]  # run-folder outputs it reads (made by earlier stages)
    makes: tuple[str, ...]  # run-folder outputs it writes

    def enabled(self, cfg: PipelineConfig) -> bool: ...
    def check(self, cfg: PipelineConfig) -> dict[str, int]: ...
    def run(self, ctx: StageContext) -> dict[str, Any]: ...


def _always(cfg: PipelineConfig) -> bool:
    return True


def _nothing(cfg: PipelineConfig) -> dict[str, int]:
    return {}


def _no_files(cfg: PipelineConfig) -> list[str]:
    return []


def _no_plugins(cfg: PipelineConfig) -> dict[str, list[str]]:
    return {}


@dataclass(frozen=True)
class ShardPlan:
    """What a mapped stage has to do: the shard indexes to run, and what it kept from before."""

    todo: list[int]
    reused_rows: int = 0
    info: dict[str, Any] = field(default_factory=dict)  # counts for the record (reused, relinked...)


@dataclass(frozen=True)
class ShardMap:
    """A stage whose work splits by shard: the flow maps ``run_shard`` over the task runner.

    ``plan`` (optional) runs first, in the flow's process: it prepares what the shards share and
    says which shards need work (default: every one of ``count``); only those become tasks.
    ``finish`` then gets the rows of every shard (run now or kept) and the plan.

    A stage whose shards come in rounds, each round reading the last one's output (GLAN's levels),
    gives ``rounds`` instead: ``rounds(ctx, map_round) -> record`` runs in the flow's process and
    calls ``map_round(shard_ids)`` once per round; ``run_shard`` gets those ids (any JSON-able value)."""

    run_shard: Callable[[StageContext, Any], int]
    finish: Callable[..., dict[str, Any]] | None = None  # (ctx, started, rows, plan) -> record
    count: Callable[[StageContext], int] | None = None
    plan: Callable[[StageContext], ShardPlan] | None = None
    rounds: Callable[[StageContext, Callable[[list[Any]], int]], dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        if self.rounds is None and (self.finish is None or (self.count is None and self.plan is None)):
            raise ValueError("a ShardMap needs `rounds`, or `finish` with `count` or `plan`")

    def make_plan(self, ctx: StageContext) -> ShardPlan:
        return self.plan(ctx) if self.plan is not None else ShardPlan(list(range(self.count(ctx))))

    def run_all(self, ctx: StageContext, map_shards: Callable[[StageContext, list[Any]], int] | None = None,
                started: float | None = None) -> dict[str, Any]:
        """The stage in full: plan, every shard of the plan (``map_shards`` spreads them over a
        task runner; default: one after another here), finish; or every round."""
        started = time.perf_counter() if started is None else started
        run = map_shards or (lambda c, todo: sum(self.run_shard(c, i) for i in todo))
        if self.rounds is not None:
            return self.rounds(ctx, lambda todo: run(ctx, list(todo)) if todo else 0)
        plan = self.make_plan(ctx)
        return self.finish(ctx, started, plan.reused_rows + (run(ctx, plan.todo) if plan.todo else 0), plan)


@dataclass(frozen=True)
class StageSpec:
    """A :class:`Stage` made of plain functions (what every stage file declares)."""

    name: str
    section: str
    run: Callable[[StageContext], dict[str, Any]]
    needs: tuple[str, ...] = ()
    makes: tuple[str, ...] = ()
    enabled: Callable[[PipelineConfig], bool] = _always
    check: Callable[[PipelineConfig], dict[str, int]] = _nothing
    retries: int = 0  # Prefect retries: stages that call a model get some
    per_shard: ShardMap | None = None
    reset: Callable[[RunFolder], None] | None = None  # clears what its own resume would keep when inputs change
    files: Callable[[PipelineConfig], list[str]] = _no_files  # the user's files it reads: their bytes key it
    folders: tuple[str, ...] = ()  # run-folder parts it writes: their files make its output key (flows.resume)
    # The user code it runs, {config key: import paths}: the source of each plugin's package keys it too.
    plugins: Callable[[PipelineConfig], dict[str, list[str]]] = _no_plugins
    redo: str = "rerun"  # what its notes say it did when an edited plugin made it run again ("rescored")


def clear(folder: Callable[[RunFolder], Path]) -> Callable[[RunFolder], None]:
    """A ``reset`` that deletes the stage's folder: its own resume would keep what it made from
    inputs that have since changed, so it starts anew."""
    return lambda run: shutil.rmtree(folder(run), ignore_errors=True)


def record(run: RunFolder, name: str, started: float, **fields: Any) -> dict[str, Any]:
    """Write and return the stage's record (with its seconds since ``started``)."""
    return run.write_record({"stage": name, "seconds": round(time.perf_counter() - started, 2), **fields})
