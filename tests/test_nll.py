"""Batched scorer: agreement with an unbatched reference, masking, batching plan, extras."""

import numpy as np
import pytest
import torch

from pipelines.llm.base import LossRequest
from pipelines.llm.hf import HFBackend
from pipelines.llm.nll import encode, plan_batches, reference_nll, score_requests
from pipelines.truncation import budget, truncate_ids


def _requests():
    reqs = []
    for i in range(9):
        user = "What is the capital of France?" + " please" * (i * 3)
        reqs.append(LossRequest([{"role": "user", "content": user}], "Paris is the capital." * (1 + i % 4)))
    reqs.append(LossRequest("", "hello world"))
    reqs.append(LossRequest("Instruction: summarise the text.\n", "A short summary."))
    return reqs


@pytest.mark.parametrize("budget", [64, 300, 100_000])
def test_batched_matches_unbatched_reference(tiny, budget):
    model, tok = tiny.pair()
    reqs = _requests()
    results = score_requests(model, tok, reqs, token_budget=budget)
    for req, res in zip(reqs, results, strict=True):
        ref = reference_nll(model, tok, req)
        assert res.token_nll.shape == ref.shape
        np.testing.assert_allclose(res.token_nll, ref, atol=1e-4)
        assert res.mean == pytest.approx(ref.mean(), abs=1e-4)
        assert res.total == pytest.approx(ref.sum(), abs=1e-3)


def test_prompt_tokens_are_masked(tiny):
    """Changing the prompt changes nothing about which tokens are scored: only completion tokens count."""
    model, tok = tiny.pair()
    a = score_requests(model, tok, [LossRequest("short prompt", "the answer")])[0]
    b = score_requests(model, tok, [LossRequest("a much longer prompt " * 5, "the answer")])[0]
    n_completion = len(tok("the answer", add_special_tokens=False)["input_ids"])
    assert a.token_nll.size == b.token_nll.size == n_completion
    # Hand computation of the first completion token's NLL from the full-vocab logits.
    it = encode(tok, LossRequest("short prompt", "the answer"))
    with torch.no_grad():
        logits = model(torch.tensor([it.prompt_ids + it.completion_ids])).logits[0]
    p = len(it.prompt_ids)
    expected = -torch.log_softmax(logits[p - 1], -1)[it.completion_ids[0]].item()
    assert a.token_nll[0] == pytest.approx(expected, abs=1e-5)


def test_empty_prompt_conditions_on_start_token(tiny):
    tok = tiny.tokenizer()
    it = encode(tok, LossRequest("", "hello"))
    assert it.prompt_ids == [tok.bos_token_id]


def test_plan_batches_respects_budget_and_covers_all():
    lengths = [5, 50, 7, 30, 30, 2, 49, 1]
    batches = plan_batches(lengths, token_budget=100)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(len(lengths)))
    for b in batches:
        assert max(lengths[i] for i in b) * len(b) <= 100 or len(b) == 1
    # longest first: the first batch holds the longest rows
    assert 1 in batches[0]


def test_truncation_rule():
    p, c = list(range(100)), list(range(1000, 1030))
    assert truncate_ids(p[:10], c[:5], 64) == (p[:10], c[:5], False)  # fits: untouched
    # The completion fits under its cap (64 - min(100, 64 // 4) = 48): kept whole, prompt's tail fills the rest.
    assert truncate_ids(p, c, 64) == (p[-34:], c, True)
    # Over its cap: cut to it; the prompt keeps a quarter, or all of itself when shorter.
    assert truncate_ids(p, c, 20) == (p[-5:], c[:15], True)
    assert truncate_ids(p[:3], c, 20) == (p[:3], c[:17], True)
    # At least one prompt token (the first completion token is predicted from it), never a drop.
    assert truncate_ids(p, c, 3) == (p[-1:], c[:2], True)
    assert budget(0, 30, 8) == (0, 8) and budget(5, 0, 3) == (3, 0)
    with pytest.raises(ValueError, match="at least 2"):
        truncate_ids(p, c, 1)


def test_truncation_keeps_completion_and_prompt_tail(tiny):
    tok = tiny.tokenizer()
    it = encode(tok, LossRequest("word " * 200, "answer " * 200), max_length=64)
    assert it.length == 64 and len(it.completion_ids) == 48
    whole = tok("answer " * 8, add_special_tokens=False)["input_ids"]  # 25 tokens: under the cap of 48
    it = encode(tok, LossRequest("word " * 200 + "END", "answer " * 8), max_length=64)
    assert it.completion_ids == whole and it.length == 64
    assert tok.decode(it.prompt_ids).endswith("END")


def test_user_mask_follows_the_prompt_tail(tiny):
    tok = tiny.tokenizer()
    content = "What is the capital of France? " * 20 + "Answer briefly."
    req = LossRequest([{"role": "user", "content": content}], "Paris.")
    full = encode(tok, req, want_user_mask=True)
    it = encode(tok, req, max_length=40, want_user_mask=True)
    assert it.length == 40 and len(it.user_mask) == len(it.prompt_ids)
    assert it.prompt_ids == full.prompt_ids[-len(it.prompt_ids) :]
    assert it.user_mask == full.user_mask[-len(it.user_mask) :]
    kept = "".join(tok.decode([t]) for t, m in zip(it.prompt_ids, it.user_mask, strict=True) if m)
    assert kept.replace(" ", "").endswith("Answerbriefly.") and any(it.user_mask)


def test_hidden_and_attention_extras(tiny):
    model, tok = tiny.pair()
    model.set_attn_implementation("eager")
    try:
        reqs = _requests()[:3]
        res = HFBackend(model, tok).loss(reqs, want_hidden=True, attn_layer=1)
    finally:
        model.set_attn_implementation("sdpa")
    for r in res:
        assert r.extras["hidden"].shape == (model.config.hidden_size,)
        assert 0.0 < r.extras["attn_ratio"] <= 1.0 + 1e-6


def test_user_mask_covers_only_user_content(tiny):
    tok = tiny.tokenizer()
    req = LossRequest([{"role": "user", "content": "What is the capital of France?"}], "Paris.")
    it = encode(tok, req, want_user_mask=True)
    kept = "".join(tok.decode([t]) for t, m in zip(it.prompt_ids, it.user_mask, strict=True) if m)
    assert kept.replace(" ", "") == "WhatisthecapitalofFrance?"
