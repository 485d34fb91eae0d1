"""The one small interface every LLM backend implements.

* ``generate(prompts, sampling)``: chat prompts (lists of {role, content}) or raw strings -> texts.
* ``loss(requests)``: per-token NLL of each completion given its prompt (prompt tokens masked).

Prompts given as message lists are rendered with the model's own chat template by the backend,
so scores and generations use the template the model was trained with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

Messages = list[dict[str, str]]
Prompt = str | Messages


@dataclass(frozen=True)
class Sampling:
    """Generation settings. ``max_tokens`` is always explicit (vLLM defaults it to 16)."""

    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = 256
    seed: int = 0
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class LossRequest:
    """Score ``completion`` given ``prompt``.

    ``prompt`` as messages is rendered with the chat template plus the assistant header; as a
    string it is used verbatim ("" means: condition on the model's start token only).
    """

    prompt: Prompt
    completion: str


@dataclass
class LossResult:
    """Per-token NLL over the completion tokens, plus what the scorer can return for free."""

    token_nll: np.ndarray
    extras: dict = field(default_factory=dict)

    @property
    def mean(self) -> float:
        return float(self.token_nll.mean()) if self.token_nll.size else float("nan")

    @property
    def total(self) -> float:
        return float(self.token_nll.sum())


@runtime_checkable
class LLM(Protocol):
    name: str

    def generate(self, prompts: list[Prompt], sampling: Sampling) -> list[str]: ...

    def loss(self, requests: list[LossRequest]) -> list[LossResult]: ...


class MissingExtra(ImportError):
    """A backend's optional dependency is not installed; the message says which extra fixes it."""

    def __init__(self, package: str, extra: str):
        super().__init__(f"The {package!r} package is needed for this backend: pip install '.[{extra}]'")
