"""The scoring pass with hidden states may run in bfloat16 (issue 39): where it is chosen, and that
it stays close to fp32 while every other pass is untouched."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from pipelines.llm import hf_choices as hf
from pipelines.llm.base import LossRequest


def _requests(n: int = 24) -> list[LossRequest]:
    words = ["alpha", "beta", "gamma", "delta", "omega", "sigma"]
    return [LossRequest([{"role": "user", "content": f"Say {words[i % 6]} {i} times {words[(i * 5) % 6]}."}],
                        " ".join(words[(i + k) % 6] for k in range(3 + i % 7))) for i in range(n)]


def test_auto_is_bf16_only_on_the_fast_cpu_path(monkeypatch):
    monkeypatch.setattr(hf, "native_bf16", lambda: True)
    assert hf.resolve_hidden_dtype("auto", "ct2", "cpu") == "bfloat16"
    assert hf.resolve_hidden_dtype("auto", "hf", "cpu") == "float32"  # a model ct2 does not score: as measured
    assert hf.resolve_hidden_dtype("auto", "ct2", "meta") == "float32"  # not a CPU
    assert hf.resolve_hidden_dtype("float32", "ct2", "cpu") == "float32"
    monkeypatch.setattr(hf, "native_bf16", lambda: False)  # emulated bf16 is slower than fp32
    assert hf.resolve_hidden_dtype("auto", "ct2", "cpu") == "float32"
    with pytest.raises(ValueError, match="hidden_dtype"):
        hf.resolve_hidden_dtype("int8", "ct2", "cpu")


def test_bf16_hidden_pass_tracks_fp32_and_leaves_the_model_alone(tiny):
    fp32 = tiny.hf(hidden_dtype="float32")
    bf16 = tiny.hf(hidden_dtype="bfloat16")
    reqs = _requests()
    a = fp32.loss(reqs, want_hidden=True)
    b = bf16.loss(reqs, want_hidden=True)
    assert next(bf16.model.parameters()).dtype == torch.float32  # the copy is bf16, not the model
    assert next(bf16.hidden_model().parameters()).dtype == torch.bfloat16
    for key in ("hidden", "hidden_weighted", "hidden_response"):
        x, y = np.stack([r.extras[key] for r in a]), np.stack([r.extras[key] for r in b])
        assert y.dtype == np.float32 and np.abs(x - y).max() < 0.05 * np.abs(x).max()
    target = np.stack([r.extras["hidden_weighted"] for r in a[:4]]).mean(0)

    def sim(results):
        h = np.stack([r.extras["hidden_weighted"] for r in results])
        return h @ target / np.linalg.norm(h, axis=1) / np.linalg.norm(target)

    assert spearmanr(sim(a), sim(b))[0] > 0.9
    mean = np.array([r.mean for r in a]), np.array([r.mean for r in b])
    assert np.abs(mean[0] - mean[1]).max() < 0.1 and spearmanr(*mean)[0] > 0.9
    # passes without hidden states run on the fp32 model: identical to fp32's
    plain_a, plain_b = fp32.loss(reqs), bf16.loss(reqs)
    assert all(np.array_equal(x.token_nll, y.token_nll) for x, y in zip(plain_a, plain_b, strict=True))
