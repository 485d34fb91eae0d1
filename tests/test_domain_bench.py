"""benchmarks.domain_adapt: the pmid split leaks nothing, and the one-pass metrics equal a plain forward pass."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks.domain_eval import CHOICES, encode, pubmedqa_metrics
from pipelines.schema import make_example


def test_split_keeps_evaluation_pmids_out_of_generation_and_target(shared_datasets, monkeypatch):
    monkeypatch.setenv("SHARED_DATASETS", str(shared_datasets))
    from benchmarks.domain_data import split_by_pmid

    split = split_by_pmid(n_eval=300, n_target=50, n_passages=None, seed=0)
    held = {json.loads(r["meta"])["pmid"] for r in split.evaluation}
    target = {json.loads(r["meta"])["pmid"] for r in split.target}
    passages = {p["id"] for p in split.passages}
    assert len(held) == 300 and len(target) == 50 and len(passages) == 700
    assert not held & passages and not held & target and target <= passages
    again = split_by_pmid(n_eval=300, n_target=50, n_passages=None, seed=0)
    assert again.evaluation == split.evaluation  # seeded: the same split every run
    row = split.evaluation[0]
    assert row["response"].split(".")[0] in CHOICES and json.loads(row["meta"])["long_answer"] in row["response"]


def rows() -> list[dict]:
    out = []
    for i, (label, long) in enumerate([("yes", "the drug works well"), ("no", "it did not help at all"),
                                       ("maybe", "results are mixed and unclear")]):
        out.append(make_example(f"Does drug {i} help?", long, context=f"We gave drug {i} to {10 + i} patients.",
                                source="t", meta={"label": label}))
        out[-1]["response"] = f"{label.capitalize()}. {long}"
    return out


@torch.no_grad()
def test_one_pass_metrics_equal_a_plain_forward_pass(tiny):
    tok = tiny.tokenizer()
    tok.add_tokens(list(CHOICES))  # one token each, as in SmolLM2's vocabulary
    model = tiny.model(tok)
    data = rows()
    labels = [json.loads(r["meta"])["label"] for r in data]
    got = pubmedqa_metrics(model, tok, data, labels, max_tokens=256, token_budget=64)  # small batches, padding
    choice = [tok.convert_tokens_to_ids(c) for c in CHOICES]
    picks, nll = [], []
    for r in data:  # each row alone: no padding, full logits
        ids, at, answer_at = encode(tok, r, 256)
        logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0], dim=-1)
        picks.append(CHOICES[int(torch.argmax(logp[at - 1, choice]))].lower())
        nll.append(float(-logp[answer_at - 1: len(ids) - 1].gather(1, torch.tensor(ids[answer_at:])[:, None]).mean()))
    assert got["long_nll"] == pytest.approx(sum(nll) / 3, abs=1e-4)
    assert got["accuracy"] == pytest.approx(sum(p == g for p, g in zip(picks, labels, strict=True)) / 3)
    assert got["majority_rate"] == pytest.approx(1 / 3)


def test_multi_token_decisions_are_an_error(tiny):
    tok = tiny.tokenizer()
    with pytest.raises(ValueError, match="one token per decision"):
        pubmedqa_metrics(tiny.model(tok), tok, rows(), ["yes", "no", "maybe"])


def test_a_difference_is_in_seed_se_units_and_never_from_one_seed():
    from benchmarks.domain_adapt import difference

    stats = {"base": {"long_nll": (2.8, 0.0), "seeds": 1}, "dapt": {"long_nll": (2.6, 0.03), "seeds": 3},
             "generated_selected": {"long_nll": (2.5, 0.04), "seeds": 5}, "target_only": {"long_nll": (2.4, 0.0), "seeds": 1}}
    assert difference(stats, "generated_selected", "dapt", "long_nll") == "-0.1000 (-2.0 SE)"
    assert difference(stats, "generated_selected", "base", "long_nll") == "-0.3000 (-7.5 SE)"  # base is untrained
    assert difference(stats, "target_only", "dapt", "long_nll") == "-0.2000 (one seed: no SE)"
