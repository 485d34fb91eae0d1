"""What a score is: a column, the model passes it reads, what it needs from the target, and a
pure ``compute``. One file per score under ``selectors/scores/`` declares one :class:`Score`;
users declare their own the same way and name it in ``score.custom`` (``"mypkg.scores:TOXICITY"``).

    from instruct_selectors.scores.base import Score

    def toxicity(inputs):                        # one value per row of inputs.table
        return [my_classifier(r) for r in inputs.table["response"]]

    TOXICITY = Score(name="toxicity", column="score_toxicity", compute=toxicity,
                     definition="share of toxic words in the response")

Passes (``instruct_selectors.score`` runs each (model, prompt) pass once, for every score that
reads it) are named ``<model>/<prompt>``: the model is ``prior``, ``cond`` (the prior fine-tuned on
the target rows: CoLoR's conditional model) or ``probe`` (a separate attention probe); the built-in
prompts are ``full`` (chat(instruction + context)), ``no_ctx`` (rows with a context, asked without
it) and ``alone`` (the response after the start token only). A score may add its own prompt form
in ``prompts`` (``{"terse": fn}``, fn(instruction, context, response) -> LossRequest) and read it
as ``"prior/terse"``. ``extras``: ``"hidden"`` adds prior/full's pooled last hidden states,
``"attn"`` its attention ratio (the model then loads with eager attention).

``target``: what the condition stage must build from the target rows first -- a built-in name,
``"conditional_model"``, ``"target_embedding"`` (target_sim's mean vector) or ``"target_matrix"``
(one row per target row), or a :class:`Target` of the score's own (an array made once by its
``build``, handed to ``compute`` as ``inputs.target[name]``).
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

MODELS = ("prior", "cond", "probe")
PASSES = ("prior/full", "prior/no_ctx", "prior/alone", "cond/full", "probe/full")  # built in, in run order
EXTRAS = ("hidden", "attn")
TARGETS = ("conditional_model", "target_embedding", "target_matrix")  # built by the condition stage itself

Prompt = Callable[[str, str, str], LossRequest]  # (instruction, context, response) -> the loss request


@dataclass
class TargetInputs:
    """What a :class:`Target`'s ``build`` gets: the conditioning target rows, the score's options,
    ``llm()``: the run's model (loaded on first call), and the run's seed."""

    rows: pl.DataFrame
    options: Any = None
    llm: Callable[[], Any] | None = None
    seed: int = 0


@dataclass(frozen=True)
class Target:
    """An array a score needs from the target rows, built once per run by the condition stage
    (cached by the rows, the model, the score's options and its code) before any shard is scored."""

    name: str
    build: Callable[[TargetInputs], np.ndarray]
    definition: str = ""


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
    prompts: Mapping[str, Prompt] = field(default_factory=dict, hash=False)  # the score's own prompt forms

    def __post_init__(self):
        forms = {*PROMPTS, *self.prompts}
        bad = [p for p in self.passes if p.count("/") != 1 or p.split("/")[0] not in MODELS
               or p.split("/")[1] not in forms]
        if bad or any(e not in EXTRAS for e in self.extras):
            raise ValueError(f"score {self.name!r}: passes are <model>/<prompt> with a model in {MODELS} and a "
                             f"prompt in {sorted(forms)} (got {bad}); extras in {EXTRAS} (got {self.extras})")
        if shadowed := sorted(set(self.prompts) & set(PROMPTS)):
            raise ValueError(f"score {self.name!r}: prompt {shadowed} is built in; give yours another name")
        if not (self.target is None or isinstance(self.target, Target) or self.target in TARGETS):
            raise ValueError(f"score {self.name!r}: target is one of {TARGETS} or a Target (got {self.target!r})")
        if isinstance(self.target, Target) and self.target.name in TARGETS:
            raise ValueError(f"score {self.name!r}: target {self.target.name!r} is built in; give yours another name")
        if not self.column:
            raise ValueError(f"score {self.name!r} has no column")

    @property
    def target_name(self) -> str | None:
        """The name the condition stage files the target under (``inputs.target[name]``)."""
        return self.target.name if isinstance(self.target, Target) else self.target

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


PROMPTS: dict[str, Prompt] = {
    "full": lambda instruction, context, response: LossRequest(
        [{"role": "user", "content": user_content(instruction, context)}], response),
    "no_ctx": lambda instruction, context, response: LossRequest([{"role": "user", "content": instruction}], response),
    "alone": lambda instruction, context, response: LossRequest("", response),
}


def build_request(prompt: str, instruction: str, context: str, response: str) -> LossRequest:
    """The loss request for one row under a built-in prompt form (the part of a pass name after '/')."""
    if prompt not in PROMPTS:
        raise ValueError(f"unknown prompt form {prompt!r}")
    return PROMPTS[prompt](instruction, context, response)
