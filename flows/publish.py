"""Push the exported dataset and its card to the Hub (export.push_to_hub): after the export, or
after the train stage when it runs (its selected-vs-random table goes on the card first)."""

from __future__ import annotations

from typing import Any

from flows.stages.base import StageContext


def publish(ctx: StageContext) -> dict[str, Any] | None:
    """Push the exported dataset and its card to the Hub when export.push_to_hub names a repo."""
    from pipelines.export import push_to_hub

    repo = ctx.cfg.export.push_to_hub
    return push_to_hub(ctx.run.dataset, repo, private=ctx.cfg.export.private) if repo else None
