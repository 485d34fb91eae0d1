"""The one small interface every LLM backend implements.

* ``generate(prompts, sampling)``: chat prompts (lists of {role, content}) or raw strings -> texts.
* ``loss(requests)``: per-token NLL of each completion given its prompt (prompt tokens masked).

Prompts given as message lists are rendered with the model's own chat template by the backend,
so scores and generations use the template the model was trained with.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from pipelines.llm.usage import Usage

Messages = list[dict[str, str]]
Prompt = str | Messages


@dataclass(frozen=True)
class Sampling:
    """Generation settings. ``max_tokens`` is always explicit (vLLM defaults it to 16).

    ``json_schema``: ask for an answer that is JSON of this schema. Backends with
    ``structured_output`` constrain decoding to it (vLLM guided decoding, OpenAI
    ``response_format``); the others ignore it, so callers still parse and repair their answers.
    """

    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = 256
    seed: int = 0
    stop: tuple[str, ...] = ()
    json_schema: dict[str, Any] | None = field(default=None, hash=False)


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


Progress = Callable[[int], None]  # called with the number of items just finished


@runtime_checkable
class LLM(Protocol):
    """What every backend offers and what callers may rely on.

    * ``name``: the backend ("hf", "vllm", "openai", "llamacpp"); ``model_id``: the model it serves.
    * ``model``: the torch module for in-process backends (hf), else None. Only scores that read
      hidden states or attention (``want_hidden``, ``attn_layer``) need it; other backends raise
      ``NotImplementedError`` when asked for them.
    * ``progress`` is called as items finish, so long calls show movement.
    * ``structured_output``: whether ``generate`` honours ``Sampling.json_schema`` (constrained
      decoding), so callers may skip repairing the answer.
    * ``usage``: the running total of this backend's calls (tokens, calls, retries, failures,
      seconds); every ``generate``/``loss`` adds to it and to the ledgers open in the calling
      context (``pipelines.llm.usage.track_usage``), which is how a stage counts its own calls.

    Backends whose requests can fail one by one (openai: an endpoint that keeps answering 503)
    also offer ``generate_results(prompts, sampling, progress)``, returning an exception object
    with ``as_reject()`` in place of each failed prompt; callers that keep going past failures
    (``generators.parsing.generate_parsed``) use it when present.
    """

    name: str
    model_id: str
    model: object | None
    structured_output: bool
    usage: Usage

    def generate(
        self, prompts: Sequence[Prompt], sampling: Sampling, progress: Progress | None = None
    ) -> list[str]: ...

    def loss(
        self,
        requests: Sequence[LossRequest],
        want_hidden: bool = False,
        attn_layer: int | None = None,
        progress: Progress | None = None,
    ) -> list[LossResult]: ...


def no_extras(backend: str, want_hidden: bool, attn_layer: int | None) -> None:
    """Raise when a backend without in-process weights is asked for hidden states or attention."""
    if want_hidden or attn_layer is not None:
        raise NotImplementedError(
            f"the {backend} backend returns losses only: hidden states and attention (embedding, "
            "target_sim, ctx_attn scores) need the hf backend"
        )


class MissingExtra(ImportError):
    """A backend's optional dependency is not installed; the message says which extra fixes it."""

    def __init__(self, package: str, extra: str):
        super().__init__(f"The {package!r} package is needed for this backend: pip install '.[{extra}]'")
