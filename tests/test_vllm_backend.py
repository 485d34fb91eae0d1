"""vLLM backend without vLLM: the missing-extra error, and the pure helpers on hand-made data."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import numpy as np
import pytest

from pipelines.llm import make_backend
from pipelines.llm.base import MissingExtra, Sampling
from pipelines.llm.vllm_backend import LOSS_PARAMS_KWARGS, completion_nll, sampling_params_kwargs


@dataclass
class FakeLogprob:  # the shape of vllm.sequence.Logprob
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed")
def test_missing_vllm_names_the_extra():
    with pytest.raises(MissingExtra, match=r"'vllm' package is needed.*pip install '\.\[vllm\]'"):
        make_backend("vllm", model="embedded")


def test_completion_nll_reads_completion_positions_only():
    ids = [1, 10, 11, 12, 13]
    # Position 0 has no context (None); extra top-k entries must not be picked.
    plp = [
        None,
        {10: FakeLogprob(-0.5)},
        {11: FakeLogprob(-1.0), 99: FakeLogprob(-0.1)},
        {12: -2.0},  # bare floats are accepted too
        {7: FakeLogprob(-0.2), 13: FakeLogprob(-3.0, rank=2)},
    ]
    np.testing.assert_allclose(completion_nll(plp, ids, n_prompt=3), [2.0, 3.0])
    np.testing.assert_allclose(completion_nll(plp, ids, n_prompt=1), [0.5, 1.0, 2.0, 3.0])
    assert completion_nll(plp, ids, n_prompt=5).size == 0


def test_completion_nll_rejects_inconsistent_data():
    with pytest.raises(ValueError, match="3 prompt logprobs for 2 tokens"):
        completion_nll([None, {5: -1.0}, {6: -1.0}], [4, 5], 1)
    with pytest.raises(ValueError, match="no logprob for token 6 at position 2"):
        completion_nll([None, {5: -1.0}, {7: -1.0}], [4, 5, 6], 1)
    with pytest.raises(ValueError, match="at least one token"):
        completion_nll([None], [4], 0)


def test_sampling_params_always_set_max_tokens_and_per_prompt_seeds():
    s = Sampling(temperature=0.7, top_p=0.9, max_tokens=40, seed=3, stop=("\n\n",))
    a, b = sampling_params_kwargs(s, 0, [2]), sampling_params_kwargs(s, 1, [2])
    assert a["max_tokens"] == 40 and a["stop"] == ["\n\n"] and a["stop_token_ids"] == [2]
    assert a["seed"] != b["seed"]
    assert sampling_params_kwargs(Sampling(temperature=0.0), 0)["top_p"] == 1.0
    assert LOSS_PARAMS_KWARGS["max_tokens"] == 1 and LOSS_PARAMS_KWARGS["prompt_logprobs"] == 0


class _FakeVLLM:
    """Just enough of vllm's surface (LLM, SamplingParams) backed by the tiny hf model, to check
    that VLLMBackend wires tokenisation, prompt logprobs and outputs the way the hf backend does."""

    def __init__(self, hf):
        self.hf = hf

        class SamplingParams:
            def __init__(self, **kwargs):
                self.__dict__.update(kwargs)

        fake = self

        class LLM:
            def __init__(self, model, **kwargs):
                assert kwargs["enable_prefix_caching"] is False
                self.llm_engine = None  # no model_config: the backend falls back to 1024

            def get_tokenizer(self):
                return fake.hf.tokenizer

            def generate(self, inputs, params, use_tqdm=False):
                return [
                    fake.run(inp["prompt_token_ids"], p)
                    for inp, p in zip(inputs, _as_list(params, inputs), strict=True)
                ]

        self.SamplingParams, self.LLM = SamplingParams, LLM

    def run(self, ids, params):
        from types import SimpleNamespace

        from pipelines.llm.nll import Encoded, score_encoded

        tok = self.hf.tokenizer
        if getattr(params, "prompt_logprobs", None) is not None:
            (res,) = score_encoded(self.hf.model, [Encoded(ids[:1], ids[1:])], pad_id=tok.pad_token_id)
            plp = [None] + [{t: FakeLogprob(-float(v))} for t, v in zip(ids[1:], res.token_nll, strict=True)]
            return SimpleNamespace(prompt_logprobs=plp, outputs=[SimpleNamespace(text="x")])
        s = Sampling(temperature=params.temperature, max_tokens=params.max_tokens)
        text = self.hf.generate([tok.decode(ids)], s)[0]
        return SimpleNamespace(prompt_logprobs=None, outputs=[SimpleNamespace(text=" " + text + " ")])


def _as_list(params, inputs):
    return params if isinstance(params, list) else [params] * len(inputs)


def test_backend_wiring_against_a_fake_vllm(monkeypatch, tiny):
    import sys

    from pipelines.llm.base import LossRequest
    from pipelines.llm.vllm_backend import VLLMBackend

    hf = tiny.hf()
    monkeypatch.setitem(sys.modules, "vllm", _FakeVLLM(hf))
    llm = VLLMBackend("/not/used")
    requests = [
        LossRequest([{"role": "user", "content": "What is the capital of France?"}], "Paris."),
        LossRequest("The quick", " brown fox"),
        LossRequest("", "A contract is an agreement."),
    ]
    for a, b in zip(llm.loss(requests), hf.loss(requests), strict=True):
        np.testing.assert_allclose(a.token_nll, b.token_nll, atol=1e-4)
    greedy = Sampling(temperature=0.0, max_tokens=6)
    assert llm.generate(["The quick brown fox"], greedy) == hf.generate(["The quick brown fox"], greedy)
