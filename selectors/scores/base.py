"""What a score is: a column, the model passes it reads, what it needs from the target, and a
pure ``compute``. One file per score under ``selectors/scores/`` declares one :class:`Score`;
users declare their own the same way and name it in ``score.custom`` (``"mypkg.scores:TOXICITY"``).

    from instruct_selectors.scores.base import Score

    def toxicity(inputs):                        # one value per row of inputs.table
        return [my_classifier(r) for r in inputs.table["response"]]

    TOXICITY = Score(name="toxicity", column="score_toxicity", compute=toxicity,
                     definition="share of toxic words in the response")

Passes (``instruct_selectors.score`` runs each (model, prompt) pass once, for every score that
reads it): ``prior/full`` (chat(instruction + context) under the prior), ``prior/no_ctx`` (rows
with a context, asked without it), ``prior/alone`` (the response after the start token only),
``cond/full`` (the prior fine-tuned on the target rows: CoLoR's conditional model) and
``probe/full`` (a separate attention probe). ``extras``: ``"hidden"`` adds prior/full's pooled last
hidden states, ``"attn"`` its attention ratio (the model then loads with eager attention).
``target``: what the condition stage must build first -- ``"conditional_model"``,
``"target_embedding"`` (target_sim's mean vector) or ``"target_matrix"`` (one row per target row).
``models``: names of other models the score asks for (``inputs.llm(name)``), e.g. the judge.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from pipelines.llm.base import LossRequest
from pipelines.schema import user_content

PASSES = ("prior/full", "prior/no_ctx", "prior/alone", "cond/full", "probe/full")
EXTRAS = ("hidden", "attn")
TARGETS = ("conditional_model", "target_embedding", "target_matrix")


@dataclass
class ScoreInputs:
    """What ``compute`` gets: the shard's rows and the passes' results over them.

    ``passes[name]`` holds ``loss`` (mean response NLL per row, NaN where skipped), ``token_nll``
    (per row an array or None) and, with the extras, ``attn`` / ``hidden`` / ``hidden_response``.
    ``options``: the score's own settings (its ``options`` model, validated), ``target``: the
    condition stage's arrays by name, ``llm(name)``: a loaded backend for a name in ``models``."""

    table: pl.DataFrame
    passes: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    options: Any = None
    target: Mapping[str, np.ndarray] = field(default_factory=dict)
    llm: Callable[[str], Any] | None = None
    seed: int = 0


@dataclass
class ScoreResult:
    """Values plus rows to keep in a rejects file (e.g. judge answers that never parsed)."""

    values: Any
    rejects: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Score:
    """One score column. ``compute(inputs)`` returns one value per row (array, list, Series) or a
    :class:`ScoreResult`; NaN or None means "not defined for this row" and is stored as null."""

    name: str
    column: str
    compute: Callable[[ScoreInputs], Any]
    definition: str = ""
    passes: tuple[str, ...] = ()
    extras: tuple[str, ...] = ()
    target: str | None = None
    models: tuple[str, ...] = ()
    options: type | None = None  # a pydantic model of the score's settings (score.options.<name>)
    dtype: Any = pl.Float64
    scalar: bool = True  # a number per row (selection steps and control tokens may read it)

    def __post_init__(self):
        bad = [p for p in self.passes if p not in PASSES]
        if bad or any(e not in EXTRAS for e in self.extras) or self.target not in (None, *TARGETS):
            raise ValueError(f"score {self.name!r}: passes must be in {PASSES}, extras in {EXTRAS}, "
                             f"target in {TARGETS} (got {self.passes}, {self.extras}, {self.target})")
        if not self.column:
            raise ValueError(f"score {self.name!r} has no column")

    def parse_options(self, raw: Mapping[str, Any] | None) -> Any:
        """The score's options from config (``None``/{} -> its defaults)."""
        if self.options is None:
            if raw:
                raise ValueError(f"score {self.name!r} takes no options (got {sorted(raw)})")
            return None
        from pydantic import ValidationError

        try:
            return self.options.model_validate(dict(raw or {}))
        except ValidationError as e:
            why = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
            raise ValueError(f"score {self.name!r} options: {why}") from None


def build_request(prompt: str, instruction: str, context: str, response: str) -> LossRequest:
    """The loss request for one row under one prompt form (the part of a pass name after '/')."""
    if prompt == "full":
        return LossRequest([{"role": "user", "content": user_content(instruction, context)}], response)
    if prompt == "no_ctx":
        return LossRequest([{"role": "user", "content": instruction}], response)
    if prompt == "alone":
        return LossRequest("", response)
    raise ValueError(f"unknown prompt form {prompt!r}")
