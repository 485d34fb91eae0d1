"""Scores on the tiny model: each matches a hand-computed reference; the plan runs each pass once."""

import json

import numpy as np
import polars as pl
import pytest
import torch
from instruct_selectors import color_filter
from instruct_selectors.color_filter import build_conditional, color_k
from instruct_selectors.context_dependency import tag_context_dependent
from instruct_selectors.score import plan_passes, score_table
from instruct_selectors.target_sim import target_embedding
from instruct_selectors.target_sim_variants import weighted_mean_pool

from pipelines.llm.base import LossRequest
from pipelines.llm.embedded import load_model_and_tokenizer
from pipelines.llm.hf import HFBackend
from pipelines.llm.nll import reference_nll
from pipelines.schema import make_example, to_table

SYSTEM = "<|im_start|>system\nYou are a helpful AI assistant.<|im_end|>\n"


@pytest.fixture(scope="module")
def tok(tiny):
    return tiny.tokenizer()


@pytest.fixture(scope="module")
def prior(tiny, tok):
    model = tiny.model(tok, layers=3, seed=0)
    model.set_attn_implementation("eager")
    return model


@pytest.fixture(scope="module")
def cond(tiny, tok):
    return tiny.model(tok, layers=3, seed=1)


@pytest.fixture(scope="module")
def table():
    rows = [
        make_example(
            "What is the capital of France?", "Paris.", context="France is a country; its capital is Paris."
        ),
        make_example(
            "Summarise the text.", "A short summary of the text.", context="The quick brown fox jumps."
        ),
        make_example(
            "Write a homework question about linear algebra.", "Compute the determinant of a matrix."
        ),
        make_example("Answer yes or no: is 2 > 1?", "yes"),
    ]
    return to_table(rows)


def _passes(llm) -> list[tuple[int, bool, bool]]:
    """Each loss() call a FakeLLM forwarded: (requests, hidden states asked, attention asked)."""
    return [(len(c.requests), c.want_hidden, c.attn_layer is not None) for c in llm.loss_calls]


def _nll(model, tok, prompt, response) -> float:
    """Hand reference: prompt text written out in ChatML, one unbatched forward, mean over response."""
    return float(reference_nll(model, tok, LossRequest(prompt, response)).mean())


def _chat(user: str) -> str:
    return f"{SYSTEM}<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"


def test_scores_match_hand_computed_reference(prior, cond, tok, table):
    scored = score_table(
        table, HFBackend(prior, tok), scores=("color", "ifd", "ctx_loss"), cond_llm=HFBackend(cond, tok),
        options={"color": {"reduction": "mean"}},
    )
    for row in scored.iter_rows(named=True):
        user = row["instruction"] + ("\n\n" + row["context"] if row["context"] else "")
        with_ctx = _nll(prior, tok, _chat(user), row["response"])
        # CoLoR: L_prior - L_cond (positive = the conditional model likes the row more).
        assert row["score_color"] == pytest.approx(
            with_ctx - _nll(cond, tok, _chat(user), row["response"]), abs=1e-4
        )
        # IFD: L(resp | instruction) / L(resp | start token only).
        bos = tok.bos_token  # "" conditions on the start token alone
        assert row["score_ifd"] == pytest.approx(with_ctx / _nll(prior, tok, bos, row["response"]), abs=1e-4)
        if row["context"]:
            without = _nll(prior, tok, _chat(row["instruction"]), row["response"])
            assert row["score_ctx_loss"] == pytest.approx(without - with_ctx, abs=1e-4)
        else:
            assert row["score_ctx_loss"] is None
    # No other column changed.
    assert scored.select(table.columns).equals(table)


def test_color_sum_reduction_matches_hand_computed_reference(prior, cond, tok, table, fake_llm):
    """CoLoR's reduction "sum": total response NLL, = log p(resp | cond) - log p(resp | prior)."""
    p, c = fake_llm(losses=HFBackend(prior, tok)), fake_llm(losses=HFBackend(cond, tok))  # count passes
    scored = score_table(table, p, scores=("color",), cond_llm=c, options={"color": {"reduction": "sum"}})
    assert len(p.loss_calls) == len(c.loss_calls) == 1  # same passes as the mean, no extra forward
    for row in scored.iter_rows(named=True):
        user = row["instruction"] + ("\n\n" + row["context"] if row["context"] else "")
        req = LossRequest(_chat(user), row["response"])
        by_hand = float(reference_nll(prior, tok, req).sum() - reference_nll(cond, tok, req).sum())
        assert row["score_color"] == pytest.approx(by_hand, abs=1e-3)
    # Multi-token rows: the sum is the mean times the response length, not the mean.
    mean = score_table(table, HFBackend(prior, tok), scores=("color",), cond_llm=HFBackend(cond, tok),
                       options={"color": {"reduction": "mean"}})
    n_tok = [len(tok(r, add_special_tokens=False)["input_ids"]) for r in table["response"].to_list()]
    assert scored["score_color"].to_numpy() == pytest.approx(mean["score_color"].to_numpy() * n_tok, abs=1e-3)
    with pytest.raises(ValueError, match="reduction"):
        score_table(table, HFBackend(prior, tok), scores=("color",), cond_llm=c, options={"color": {"reduction": "max"}})


def test_loss_is_mean_over_response_tokens_only(prior, tok):
    """Masking: the score uses exactly the response tokens, whatever the prompt length."""
    res = HFBackend(prior, tok).loss([LossRequest(_chat("hi " * 30), "Paris is nice.")])[0]
    assert res.token_nll.size == len(tok("Paris is nice.", add_special_tokens=False)["input_ids"])


def test_attention_ratio_matches_hand_computation(prior, tok, table):
    layer = 1
    scored = score_table(table, HFBackend(prior, tok), scores=("ctx_attn",), options={"ctx_attn": {"layer": layer}})
    for row in scored.iter_rows(named=True):
        user = row["instruction"] + ("\n\n" + row["context"] if row["context"] else "")
        pieces = [SYSTEM + "<|im_start|>user\n", user, "<|im_end|>\n<|im_start|>assistant\n", row["response"]]
        ids = [tok(p, add_special_tokens=False)["input_ids"] for p in pieces]
        start, n_user, p = len(ids[0]), len(ids[1]), len(ids[0]) + len(ids[1]) + len(ids[2])
        # User content = the user message's tokens minus whitespace-only ones (e.g. the "\n\n").
        user_cols = [start + j for j, t in enumerate(ids[1]) if tok.decode([t]).strip()]
        with torch.no_grad():
            att = prior(torch.tensor([sum(ids, [])]), output_attentions=True).attentions[layer][0]
        c = len(ids[3])
        mass = att[:, p : p + c, user_cols].sum(-1)  # (heads, response tokens)
        expected = mass.max(0).values.mean().item()
        assert 0.0 < row["score_ctx_attn"] <= 1.0
        assert row["score_ctx_attn"] == pytest.approx(expected, abs=1e-5)
        assert n_user > len(user_cols) or not row["context"]


def test_ctx_attn_needs_eager_attention(tiny, tok, table):
    model = tiny.model(tok, layers=2)
    model.set_attn_implementation("sdpa")
    with pytest.raises(ValueError, match="eager"):
        score_table(table, HFBackend(model, tok), scores=("ctx_attn",))


def _hidden(model, tok, user: str, response: str) -> tuple[np.ndarray, np.ndarray]:
    """Hand reference: last hidden state, mean over all tokens and over the response tokens."""
    prompt = tok(_chat(user), add_special_tokens=False)["input_ids"]
    resp = tok(response, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        h = model(torch.tensor([prompt + resp]), output_hidden_states=True).hidden_states[-1][0].double()
    return h.mean(0).numpy(), h[len(prompt) :].mean(0).numpy(), weighted_mean_pool(h[None].numpy(), [len(h)])[0]


@pytest.mark.parametrize("with_context", [False, True])
@pytest.mark.parametrize("pooling", ["response", "all", "weighted"])
def test_target_sim_matches_hand_computation(prior, tok, table, pooling, with_context):
    target = table[:2]
    assert (target["context"] != "").any(), "a target row with a context tells the two forms apart"
    vec = target_embedding(HFBackend(prior, tok), target, pooling=pooling, with_context=with_context)
    scored = score_table(table, HFBackend(prior, tok), scores=("target_sim",), target_vector=vec,
                         options={"target_sim": {"pooling": pooling}})

    def pooled(row, context=True):
        user = row["instruction"] + ("\n\n" + row["context"] if row["context"] and context else "")
        every, resp, weighted = _hidden(prior, tok, user, row["response"])
        return {"response": resp, "all": every, "weighted": weighted}[pooling]

    # The target rows leave their context out unless asked; the pool's rows keep theirs.
    unit = [pooled(r, with_context) / np.linalg.norm(pooled(r, with_context)) for r in target.iter_rows(named=True)]
    expected_target = np.mean(unit, axis=0)
    assert vec == pytest.approx(expected_target, abs=1e-4)
    for row in scored.iter_rows(named=True):
        h = pooled(row)
        cos = float(h @ expected_target / (np.linalg.norm(h) * np.linalg.norm(expected_target)))
        assert row["score_target_sim"] == pytest.approx(cos, abs=1e-4)
    if with_context:  # a target row, passage and all, is closer to the target than a row unlike it
        assert scored["score_target_sim"][0] > scored["score_target_sim"][3]
    else:  # leaving the passages out moves the target vector
        other = target_embedding(HFBackend(prior, tok), target, pooling=pooling, with_context=True)
        assert np.abs(vec - other).max() > 1e-3
    with pytest.raises(ValueError, match="target_vector"):
        score_table(table, HFBackend(prior, tok), scores=("target_sim",))


def test_shared_plan_runs_each_pass_once(prior, cond, tok, table, fake_llm):
    p, c = fake_llm(losses=HFBackend(prior, tok)), fake_llm(losses=HFBackend(cond, tok))  # count passes
    vec = target_embedding(HFBackend(prior, tok), table[:2])
    scored = score_table(table, p, scores=("color", "ifd", "ctx_loss", "ctx_attn", "target_sim", "embedding"),
                         cond_llm=c, target_vector=vec)
    assert scored["score_target_sim"].null_count() == 0
    n, n_ctx = table.height, int((table["context"] != "").sum())
    # prior: with-context pass (shared by CoLoR, IFD, ctx_loss, attention, embeddings, target
    # similarity), no-context pass over the rows that have a context, response-alone pass.
    # cond: one pass.
    assert _passes(p) == [(n, True, True), (n_ctx, False, False), (n, False, False)]
    assert _passes(c) == [(n, False, False)]
    assert scored["embedding"].list.len().to_list() == [prior.config.hidden_size] * n
    assert [x.name for x in plan_passes(("color",))] == ["prior/full", "cond/full"]
    assert [x.name for x in plan_passes(("ifd", "ctx_attn"), separate_probe=True)] == [
        "prior/full",
        "prior/alone",
        "probe/full",
    ]


def test_unknown_score_and_missing_cond(prior, tok, table):
    with pytest.raises(ValueError, match="unknown score"):
        score_table(table, HFBackend(prior, tok), scores=("perplexity",))
    with pytest.raises(ValueError, match="cond_llm"):
        score_table(table, HFBackend(prior, tok), scores=("color",))


def test_tag_context_dependent_by_value_and_quantile(table):
    t = table.with_columns(pl.Series("score_ctx_loss", [0.5, None, -0.2, 0.1]))
    tagged = tag_context_dependent(t, "score_ctx_loss", threshold=0.1)
    assert tagged["ctx_dependent"].to_list() == [True, None, False, True]
    assert tagged["meta"].to_list() == t["meta"].to_list()  # another stage's column stays as it was
    by_q = tag_context_dependent(t, "score_ctx_loss", quantile=0.9)["ctx_dependent"].to_list()
    assert by_q == [True, None, False, False]


def test_color_k():
    assert color_k(100, tau=7) == 14  # floor(N / tau)
    assert color_k(100, fraction=0.1) == 10
    assert color_k(5, k=10) == 5
    with pytest.raises(ValueError):
        color_k(100, tau=7, k=3)


def _target():
    return to_table([make_example(f"Say the number {i}.", f"The number is {i}.") for i in range(6)])


def test_conditional_model_cached_by_fingerprint(tmp_path, monkeypatch, tiny):
    calls = []

    def fake_train(model, tok, table, method, epochs, seed, opts):
        calls.append((table.height, method, epochs, seed, opts))
        with torch.no_grad():
            model.lm_head.weight.add_(0.01)  # a visible change, no trainer needed
        return model

    monkeypatch.setattr(color_filter, "_train_conditional", fake_train)
    first = build_conditional("tiny", _target(), tmp_path, seed=0)
    again = build_conditional("tiny", _target().reverse(), tmp_path, seed=0)  # same set, other order
    assert first == again and len(calls) == 1
    other = build_conditional("tiny", _target(), tmp_path, seed=1)
    assert other != first and len(calls) == 2
    info = json.loads((first / "fingerprint.json").read_text())
    assert info["method"] == "lora" and info["target_rows"] == 6
    model, tok = load_model_and_tokenizer(str(first), device="cpu")
    base = tiny.model()
    assert torch.allclose(model.lm_head.weight, base.lm_head.weight + 0.01, atol=1e-6)
    assert tok.chat_template  # scoring needs the template to survive the save


def test_conditional_model_really_trains_on_target(tmp_path, tiny):
    target = _target()
    path = build_conditional("tiny", target, tmp_path, epochs=1, learning_rate=5e-2, batch_size=2)
    prior = tiny.hf()
    cond_model, cond_tok = load_model_and_tokenizer(str(path), device="cpu")
    scored = score_table(target, prior, scores=("color",), cond_llm=HFBackend(cond_model, cond_tok))
    # One epoch on exactly these rows lowers their loss: CoLoR scores are positive.
    assert (scored["score_color"].to_numpy() > 0).all()
    assert np.isfinite(scored["score_color"].to_numpy()).all()
