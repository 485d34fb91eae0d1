"""Model usage per stage: each stage that calls a model wraps its work in :func:`stage_usage`
and puts :func:`usage_field` into its record (``usage``: per ``<backend>:<model>``, tokens,
calls, retries, failures, seconds, and ``cost`` when ``model.price_per_million`` is set).

Ledgers are saved under ``stages/usage/`` (RunFolder.usage_file) and added to on every attempt,
so a stage retried by Prefect, a resumed run, or score shards mapped over Dask worker processes
all end up in the one record. See pipelines/llm/usage.py for how backends count.
"""

from __future__ import annotations

from typing import Any

from flows.config import PipelineConfig
from flows.run_folder import RunFolder
from pipelines.llm.usage import PersistedLedger, UsageLedger, load_ledger, persisted_usage


def prices(cfg: PipelineConfig) -> dict[str, dict[str, float]]:
    """{model id: price per million tokens}: the run's model when priced (a judge on another
    model is counted but not priced)."""
    price = cfg.model.price_per_million
    return {cfg.model.model: price.model_dump()} if price is not None else {}


def stage_usage(run: RunFolder, stage: str, index: int | None = None):
    """Context manager: the model calls made inside, saved to the stage's (or shard's) ledger."""
    return persisted_usage(run.usage_file(stage, index), name=run.relative)


def usage_field(cfg: PipelineConfig, ledger: PersistedLedger | UsageLedger) -> dict[str, Any]:
    """The record's ``usage`` value: every attempt's calls so far, priced."""
    total = ledger.saved() if isinstance(ledger, PersistedLedger) else ledger
    return total.to_dict(prices(cfg))


def saved_usage(cfg: PipelineConfig, run: RunFolder, stage: str) -> dict[str, Any]:
    """The ``usage`` value from what the stage and its shards saved (for mapped stages: score)."""
    total = UsageLedger()
    for path in run.usage_files(stage):
        total.merge(load_ledger(path))
    return total.to_dict(prices(cfg))
