"""Shared pytest fixtures and test doubles. Keep each fixture small; add yours below with a one-line docstring.

* ``tiny``: fresh tiny Llama models, tokenizers and hf backends (pipelines/llm/tiny.py);
* ``fake_llm``: :class:`FakeLLM`, a scripted stand-in for any LLM backend (pipelines/llm/base.py).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipelines.llm.base import LossRequest, LossResult, Prompt, Sampling
from pipelines.llm.usage import Usage, record

# Third-party data lives beside the repo (../shared/datasets), never inside it.
SHARED_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """The ../shared/datasets folder; skips the test (not a failure) when it is absent."""
    if not SHARED_DATASETS.is_dir():
        pytest.skip(f"{SHARED_DATASETS} not present (real third-party data for tests)")
    return SHARED_DATASETS


# ---- the tiny model ---------------------------------------------------------------------------


class Tiny:
    """Builds fresh tiny models and tokenizers. Each costs about 10 ms, so no test shares one that
    another test might train or add tokens to; torch is imported on first use, not by every test."""

    def tokenizer(self):
        from pipelines.llm.tiny import tiny_tokenizer

        return tiny_tokenizer()

    def model(self, tokenizer=None, layers: int = 2, seed: int = 0):
        """A seeded tiny Llama in eval mode, sized for ``tokenizer`` (a fresh one by default)."""
        from pipelines.llm.tiny import tiny_model

        return tiny_model(tokenizer or self.tokenizer(), layers=layers, seed=seed)

    def pair(self, layers: int = 2, seed: int = 0):
        """``(model, tokenizer)``, both fresh."""
        tok = self.tokenizer()
        return self.model(tok, layers=layers, seed=seed), tok

    def hf(self, layers: int = 2, seed: int = 0, **options):
        """An HFBackend over a fresh pair; ``options`` go to HFBackend (model_id, generation_engine...)."""
        from pipelines.llm.hf import HFBackend

        return HFBackend(*self.pair(layers=layers, seed=seed), **options)


@pytest.fixture(scope="session")
def tiny() -> Tiny:
    """Fresh tiny models, tokenizers and hf backends: ``tiny.pair()``, ``tiny.hf(model_id="tiny")``."""
    return Tiny()


# ---- the fake LLM -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Ask:
    """One prompt as the fake LLM received it."""

    prompt: Prompt  # as given: a message list or a string
    text: str  # the last message's content, or the string prompt itself
    attempt: int  # how many times this text was asked before (0: the first time)
    sampling: Sampling


@dataclass(frozen=True)
class Call:
    """One ``generate`` call: its prompts and its sampling."""

    asks: list[Ask]
    sampling: Sampling


@dataclass(frozen=True)
class LossCall:
    """One ``loss`` call: its requests and the extras asked for."""

    requests: list[LossRequest]
    want_hidden: bool
    attn_layer: int | None


Answers = str | list[str] | dict[str, str] | Callable[[Ask], str]


class FakeLLM:
    """A scripted LLM backend with the surface of pipelines.llm.base.LLM and no model.

    ``answers``, what ``generate`` returns for each prompt:
      * a str: that answer to every prompt;
      * a list: the next answer for each prompt, in order across calls;
      * a dict: by the prompt's text (``Ask.text``); a text not in it gets ``default``
        (KeyError when there is none);
      * a callable ``answers(ask) -> str``, given the :class:`Ask` (its text, attempt, sampling).
    ``losses``, what ``loss`` returns: a callable ``(LossRequest) -> per-token NLLs``, or a backend
    whose ``loss`` is called (the fake then only records the calls, and its ``model`` is the
    backend's, for scores that read hidden states).
    ``fail``: prompts (``fail(ask)`` true) whose request fails for good, as after the openai
    backend's retries: the fake then also offers ``generate_results``, which returns a
    RequestFailed (HTTP 503, 6 attempts) in their place; ``generate`` raises it.
    ``batch_size``: ``progress`` is called once per batch of this many prompts (default: per call).

    Records ``calls`` (one :class:`Call` per ``generate``), ``asks`` (every :class:`Ask`) and
    ``loss_calls`` (one :class:`LossCall` per ``loss``). Like a real backend it adds what it does
    to ``usage`` and to the open ledgers (pipelines.llm.usage.record), counting whitespace-separated
    words as tokens.
    """

    def __init__(
        self,
        answers: Answers = "",
        *,
        default: str | None = None,
        losses: Callable[[LossRequest], Sequence[float]] | Any = None,
        fail: Callable[[Ask], bool] | None = None,
        structured_output: bool = False,
        batch_size: int | None = None,
        name: str = "fake",
        model_id: str = "fake",
    ):
        self.answers = list(answers) if isinstance(answers, list) else answers
        self.default, self.losses, self.fail, self.batch_size = default, losses, fail, batch_size
        self.structured_output, self.name, self.model_id = structured_output, name, model_id
        self.model = getattr(losses, "model", None)
        self.usage = Usage()
        self.calls: list[Call] = []
        self.asks: list[Ask] = []
        self.loss_calls: list[LossCall] = []
        self._seen: Counter[str] = Counter()
        self._lock = threading.Lock()
        if fail is not None:  # only backends whose requests fail one by one have it (pipelines/llm/retry.py)
            self.generate_results = self._generate_results

    def generate(self, prompts: Sequence[Prompt], sampling: Sampling, progress=None) -> list[str]:
        results = self._generate_results(prompts, sampling, progress)
        for r in results:
            if isinstance(r, Exception):
                raise r
        return results

    def _generate_results(self, prompts: Sequence[Prompt], sampling: Sampling, progress=None) -> list:
        from pipelines.llm.openai_backend import RequestFailed

        with self._lock:
            asks = []
            for p in prompts:
                text = p if isinstance(p, str) else p[-1]["content"]
                asks.append(Ask(p, text, self._seen[text], sampling))
                self._seen[text] += 1
            self.calls.append(Call(asks, sampling))
            self.asks.extend(asks)
        out: list = []
        for i, ask in enumerate(asks):
            if self.fail is not None and self.fail(ask):
                out.append(RequestFailed(i, "HTTP 503 Service Unavailable", status=503, attempts=6))
            else:
                out.append(self._answer(ask))
        step = self.batch_size or max(len(asks), 1)
        for start in range(0, len(asks), step):
            if progress is not None:
                progress(len(asks[start : start + step]))
        words = [len(a.text.split()) for a in asks]
        record(
            self,
            Usage(
                prompt_tokens=sum(words),
                calls=len(asks),
                completion_tokens=sum(len(t.split()) for t in out if isinstance(t, str)),
            ),
        )
        return out

    def _answer(self, ask: Ask) -> str:
        if isinstance(self.answers, str):
            return self.answers
        if isinstance(self.answers, list):
            with self._lock:
                return self.answers.pop(0)
        if isinstance(self.answers, dict):
            if ask.text in self.answers or self.default is None:
                return self.answers[ask.text]
            return self.default
        return self.answers(ask)

    def loss(
        self,
        requests: Sequence[LossRequest],
        want_hidden: bool = False,
        attn_layer: int | None = None,
        progress=None,
    ) -> list[LossResult]:
        with self._lock:
            self.loss_calls.append(LossCall(list(requests), want_hidden, attn_layer))
        if self.losses is None:
            raise AssertionError("this FakeLLM was given no losses")
        if hasattr(self.losses, "loss"):  # a real backend: it counts its own usage
            return self.losses.loss(
                requests, want_hidden=want_hidden, attn_layer=attn_layer, progress=progress
            )
        out = [LossResult(np.asarray(self.losses(r), dtype=float)) for r in requests]
        if progress is not None:
            progress(len(out))
        words = sum(len(str(r.prompt).split()) + len(r.completion.split()) for r in requests)
        record(self, Usage(prompt_tokens=words, calls=len(out)))
        return out


@pytest.fixture(scope="session")
def fake_llm() -> type[FakeLLM]:
    """The :class:`FakeLLM` class: ``fake_llm({"prompt text": "answer"})``, ``fake_llm(lambda ask: ...)``."""
    return FakeLLM


# ---- the pipeline in this process -------------------------------------------------------------


def run_in_process(cfg) -> tuple[Any, dict[str, dict]]:
    """Every enabled stage of ``cfg`` on its run folder, in order, as the flow runs them but
    without Prefect: (the RunFolder, {stage: record})."""
    from flows.pipeline import run_keyed, stages_for
    from flows.run_folder import RunFolder
    from flows.stages.base import StageContext

    run = RunFolder(cfg.run_dir())
    run.root.mkdir(parents=True, exist_ok=True)
    run.claim(cfg.fingerprint(), cfg.model_dump_json())
    records: dict[str, dict] = {}
    for stage in stages_for(cfg):
        records[stage.name] = run_keyed(stage.name, StageContext(cfg, run, dict(records)))
    return run, records
