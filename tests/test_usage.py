"""Model usage accounting (pipelines/llm/usage.py, flows/usage.py): token counts from the tiny hf
backend and from the openai backend against the loopback server, ledgers scoped per context and
thread, ledgers kept across attempts, cost from prices, the score record, report and card tables."""

from __future__ import annotations

import threading

import polars as pl
import pytest

from flows.config import load_config
from flows.pipeline import run_stage
from flows.run_folder import RunFolder
from pipelines.llm.base import LossRequest, Sampling
from pipelines.llm.hf import HFBackend
from pipelines.llm.nll import encode, render_chat
from pipelines.llm.openai_backend import OpenAIBackend
from pipelines.llm.serve import OpenAICompatServer
from pipelines.llm.usage import (
    Usage,
    UsageLedger,
    backend_key,
    cost,
    load_ledger,
    persisted_usage,
    track_usage,
    usage_rows,
)
from pipelines.shards import atomic_write_jsonl

GREEDY = Sampling(temperature=0.0, max_tokens=8)
PROMPTS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    "The quick brown fox",
    [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Summarise the text."}],
]


@pytest.fixture(scope="module")
def hf(tiny) -> HFBackend:
    return tiny.hf(model_id="tiny", generation_engine="hf")


def _prompt_tokens(tok, prompt) -> int:
    text = prompt if isinstance(prompt, str) else render_chat(tok, prompt)
    return len(tok(text, add_special_tokens=False)["input_ids"])


def test_hf_backend_counts_prompt_and_generated_tokens(hf):
    before = hf.usage.copy()
    with track_usage() as ledger:
        texts = hf.generate(PROMPTS, GREEDY)
    used = ledger.entries["hf:tiny"]
    assert used.prompt_tokens == sum(_prompt_tokens(hf.tokenizer, p) for p in PROMPTS)
    assert used.calls == 3 and used.retries == used.failures == 0 and used.seconds > 0
    # Generated tokens: at least what the texts re-tokenise to, at most max_tokens per prompt.
    assert sum(len(hf.tokenizer(t)["input_ids"]) for t in texts) <= used.completion_tokens <= 3 * 8
    assert hf.usage - before == used  # the backend's own running total moved by the same amount


def test_hf_loss_counts_every_token_read(hf):
    requests = [LossRequest(PROMPTS[0], "Paris is the capital."), LossRequest("The quick", " brown fox.")]
    with track_usage() as ledger:
        hf.loss(requests)
    used = ledger.entries["hf:tiny"]
    assert used.prompt_tokens == sum(encode(hf.tokenizer, r, hf.max_length).length for r in requests)
    assert used.completion_tokens == 0 and used.calls == 2


def test_a_failing_call_counts_its_items_as_failures(hf):
    with track_usage() as ledger, pytest.raises(IndexError):
        hf.loss([LossRequest("x", "y")], attn_layer=99)  # no such layer
    assert ledger.entries["hf:tiny"].failures == 1


def test_openai_backend_counts_the_servers_usage_field(hf):
    with OpenAICompatServer(hf, model_name="tiny") as server, OpenAIBackend("tiny", base_url=server.url) as llm:
        with track_usage() as ledger:
            texts = llm.generate(PROMPTS, GREEDY)
            llm.loss([LossRequest("The quick", " brown fox.")])
    used = ledger.entries["openai:tiny"]
    tok = hf.tokenizer
    generated = sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)
    full = len(tok("The quick brown fox.", add_special_tokens=False)["input_ids"])
    assert used.calls == 4 and used.retries == used.failures == 0
    assert used.prompt_tokens == sum(_prompt_tokens(tok, p) for p in PROMPTS) + full
    # loss: max_tokens=1, so the server generates (and reports) at most one token more
    assert generated <= used.completion_tokens <= generated + 1
    assert llm.usage == used


def _ask(llm, n: int) -> None:
    """One prompt of ``n`` tokens (the fake LLM counts words) and an empty answer."""
    llm.generate([" ".join(["w"] * n)], GREEDY)


def test_ledgers_are_per_context_and_per_thread(fake_llm):
    llm, seen, barrier = fake_llm(model_id="m"), {}, threading.Barrier(2)

    def stage(name, n):
        with track_usage() as ledger:
            barrier.wait()  # both ledgers open at once
            for _ in range(n):
                _ask(llm, 10)
            barrier.wait()
        seen[name] = ledger.entries["fake:m"].prompt_tokens

    threads = [threading.Thread(target=stage, args=(s, n)) for s, n in (("a", 3), ("b", 5))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {"a": 30, "b": 50} and llm.usage.prompt_tokens == 80
    with track_usage() as outer:
        _ask(llm, 1)
        with track_usage() as inner:
            _ask(llm, 2)
    assert outer.entries["fake:m"].prompt_tokens == 3 and inner.entries["fake:m"].prompt_tokens == 2
    assert backend_key(llm) == "fake:m"


def test_a_persisted_ledger_adds_every_attempt_even_failed_ones(tmp_path, fake_llm):
    llm, path = fake_llm(model_id="m"), tmp_path / "usage" / "stage.json"
    with pytest.raises(RuntimeError), persisted_usage(path):
        _ask(llm, 7)
        raise RuntimeError("killed by a retryable error")
    with persisted_usage(path) as ledger:
        _ask(llm, 5)
        assert ledger.saved().entries["fake:m"].prompt_tokens == 12
    assert load_ledger(path).entries["fake:m"] == Usage(prompt_tokens=12, calls=2)


def test_cost_from_prices_per_million():
    used = Usage(prompt_tokens=2_000_000, completion_tokens=500_000)
    assert cost(used, {"prompt": 0.15, "completion": 0.6}) == pytest.approx(0.3 + 0.3)
    assert cost(used, None) is None
    ledger = UsageLedger({"openai:gpt": used, "hf:other": Usage(prompt_tokens=10)})
    out = ledger.to_dict({"gpt": {"prompt": 0.15, "completion": 0.6}})
    assert out["openai:gpt"]["cost"] == pytest.approx(0.6) and "cost" not in out["hf:other"]
    rows = usage_rows([{"stage": "generate_text", "usage": out}])
    assert rows[-1]["stage"] == "total" and rows[-1]["prompt_tokens"] == 2_000_010
    assert rows[-1]["cost"] == pytest.approx(0.6) and "priced rows only" in rows[-1]["backend"]


@pytest.fixture()
def priced_run(tmp_path):
    rows = [{"instruction": f"What is {i} plus {i}?", "output": f"It is {2 * i}."} for i in range(6)]
    data = tmp_path / "in.jsonl"
    atomic_write_jsonl(rows, data)
    cfg = load_config(overrides=[
        "generate.taxonomy.enabled=false", "generate.text.enabled=false", f"generate.inputs=[{data}]",
        "model.model=tiny", "model.backend=hf", "score.scores=[ifd]", "run.shard_size=4",
        f"run.out_dir={tmp_path / 'runs'}", "select.steps=[{top_k: {column: score_ifd, fraction: 0.5}}]",
        "model.price_per_million={prompt: 1000, completion: 2000}",
    ])
    run = RunFolder(cfg.run_dir())
    run.claim(cfg.fingerprint(), cfg.model_dump_json())
    return run, cfg


def test_score_record_report_and_card_show_tokens_and_cost(priced_run):
    run, cfg = priced_run
    run_stage("collect", run, cfg)
    record_ = run_stage("score", run, cfg)
    used = record_["usage"]["hf:tiny"]
    # ifd reads each row twice (response alone, and after the instruction): 6 rows -> 12 items
    assert used["calls"] == 12 and used["prompt_tokens"] > 0 and used["completion_tokens"] == 0
    assert used["cost"] == pytest.approx(used["prompt_tokens"] * 1000 / 1e6)
    assert len(run.usage_files("score")) == 2  # one ledger per shard
    again = run_stage("score", run, cfg)  # every shard already scored: nothing new is used
    assert again["usage"] == record_["usage"]
    run_stage("select", run, cfg)
    report = run_stage("report", run, cfg)["outputs"]
    text = open(run.path(report["markdown"])).read()
    section = text.split("## Model usage")[1].split("##")[0]
    assert "| score | hf:tiny |" in section and "| total |" in section and "cost" in section
    exported = run_stage("export", run, cfg)
    card = (run.dataset / "README.md").read_text()
    assert "## Model tokens used" in card and str(used["prompt_tokens"]) in card
    assert exported["rows_out"] == pl.read_parquet(run.selected)["keep"].sum()


def test_price_does_not_change_the_fingerprint():
    assert load_config(overrides=["model.price_per_million={prompt: 1}"]).fingerprint() == load_config().fingerprint()
