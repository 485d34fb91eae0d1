"""HFBackend's opt-in generation dtype: generation uses a bf16 copy, scoring keeps the fp32 model."""

from __future__ import annotations

import torch

from pipelines.llm.base import Sampling
from pipelines.llm.hf import HFBackend


def test_generation_runs_on_a_bf16_copy_and_scoring_model_is_untouched():
    llm = HFBackend.load("tiny", device="cpu", generation_dtype="bfloat16", generation_batch_size=2)
    out = llm.generate([[{"role": "user", "content": "Hi"}], "raw prompt"], Sampling(max_tokens=4, seed=1))
    assert len(out) == 2 and all(isinstance(t, str) for t in out)
    assert next(llm.model.parameters()).dtype == torch.float32
    assert next(llm.generation_model().parameters()).dtype == torch.bfloat16
    assert llm.generation_model() is llm.generation_model()  # made once
    llm.generation_dtype = None
    assert llm.generation_model() is llm.model
