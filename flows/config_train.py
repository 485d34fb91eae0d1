"""The ``[train]`` section of the run configuration (flows/config.py re-exports it): how the
train stage fine-tunes on the selection, and which control arms it trains beside it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipelines.finetune.methods import METHOD_CHOICES


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ControlTokensConfig(_Section):
    """Conditional training (Korbak et al. 2023; pipelines/finetune/control.py): every row of the
    selection table trains, its prompt prefixed <|good|> when ``column`` passes the cut-off, else
    <|bad|>; evaluation asks with <|good|>."""

    column: str = Field(description="a score column this run computes, e.g. score_judge")
    threshold: float | None = Field(None, description="good: column >= threshold")
    quantile: float | None = Field(None, ge=0, le=1, description="or: the cut-off is this quantile of the scores")
    largest: bool = Field(True, description="false: good is column <= the cut-off (lower is better)")

    @model_validator(mode="after")
    def _one_cutoff(self):
        if (self.threshold is None) == (self.quantile is None):
            raise ValueError("give exactly one of threshold or quantile")
        return self


class TrainConfig(_Section):
    method: Literal[METHOD_CHOICES] | None = None
    max_steps: int | None = Field(30, description="None: one epoch")
    eval_path: str | None = Field(None, description="set to evaluate on (default: the target rows held out "
                                  "of the condition stage, score.target_holdout)")
    conditional_indicator: bool = Field(False, description="append [IND] to context-dependent rows (the ctx_dependent column)")
    control_tokens: ControlTokensConfig | None = Field(None, description="train on every selected row with <|good|>/<|bad|> prefixes (off: None)")
    options: dict[str, Any] = Field(default_factory=dict)
    compare: list[Literal["random", "whole"]] = Field(
        default_factory=lambda: ["random"], description="control arms trained beside the selection, same "
        "method/steps/seed: random = as many rows drawn at random from the candidates the selection chose "
        "from; whole = every candidate; [] = none")
    general_path: str | None = Field(None, description="instruction data you already have (any format the "
                                     "inputs take): arm 'general' trains on as many of its rows as the selection "
                                     "kept, drawn at random (seed run.seed), so the table says whether the run's "
                                     "rows beat it")
    compare_seeds: int = Field(1, ge=1, description="random arms, one per draw seed (run.seed + k): their "
                               "spread is the noise the selection must beat (3+ for a trustworthy verdict)")
    fresh_process: bool = Field(True, description="train each arm in a fresh Python process: the flow's "
                                "generation and scoring models are not in its memory (peak RSS is training's own)")

    @model_validator(mode="after")
    def _unique_arms(self):
        self.compare = list(dict.fromkeys(self.compare))
        return self
