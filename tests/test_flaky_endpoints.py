"""Flaky OpenAI-compatible endpoints: the loopback server (pipelines.llm.serve) with scripted faults
-- 429 with Retry-After, 500/503, a connection reset mid-body, a server that stops answering, a 200
whose body is malformed. The backend retries within bounds and counts retries and failures; a
request that fails for good becomes a reject of its item (generators.parsing) and the stage goes
on, losing and duplicating no row. Timeouts and waits here are fractions of a second."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections.abc import Callable

import polars as pl
import pytest

from flows.config import load_config
from flows.pipeline import run_stage
from flows.run_folder import RunFolder
from flows.stages import generate_text as generate_text_stage
from generators.parsing import Reject, generate_parsed
from pipelines.llm.base import Sampling
from pipelines.llm.hf import HFBackend
from pipelines.llm.openai_backend import OpenAIBackend, RequestFailed
from pipelines.llm.serve import OpenAICompatServer
from pipelines.llm.usage import track_usage
from pipelines.shards import read_rejects, read_shards

GREEDY = Sampling(temperature=0.0, max_tokens=8)
STOP = threading.Event()  # set at teardown: a "hung" handler returns at once


# --- faults: what the server does instead of (or before) answering ------------------------------

def status(code: int, retry_after: str | None = None):
    """An HTTP error answer (with Retry-After when given)."""
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return lambda: (code, {"error": {"message": f"injected {code}"}}, headers)


def reset_mid_body():
    """Headers promising 1000 bytes, 10 of them, then a TCP reset."""
    def write(handler):
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", "1000")
        handler.end_headers()
        handler.wfile.write(b'{"choices"')
        handler.wfile.flush()
        handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        handler.connection.close()  # linger 0: RST, not FIN
        handler.close_connection = True
    return lambda: write


def hang(seconds: float = 5.0):
    """Stop answering (until teardown or ``seconds``)."""
    def wait(handler):
        STOP.wait(seconds)
        handler.close_connection = True
    return lambda: wait


def malformed(body: bytes = b'{"choices": [{"text": "cut sh'):
    """A 200 whose body is not the JSON asked for."""
    def write(handler):
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
    return lambda: write


class Script:
    """A ``before_request`` hook: each prompt (found by a key in its text) meets its own list of
    faults on its successive requests, then the real answer (``None``) or ``answer(body)``."""

    def __init__(self, faults: dict[str, list[Callable]], answer: Callable[[dict], dict] | None = None):
        self.faults, self.answer = {k: list(v) for k, v in faults.items()}, answer
        self.requests: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, path: str, body: dict):
        text = str(body.get("prompt") or body.get("messages"))
        with self.lock:
            self.requests.append(text)
            key = next((k for k in self.faults if k in text), None)
            fault = self.faults[key].pop(0) if key is not None and self.faults[key] else None
        if fault is not None:
            return fault()
        if self.answer is not None:
            return 200, self.answer(body)
        return None


@pytest.fixture(scope="module")
def hf(tiny) -> HFBackend:
    return tiny.hf(model_id="tiny", generation_engine="hf")


@pytest.fixture(scope="module")
def _server(hf):
    with OpenAICompatServer(hf, model_name="tiny") as server:
        yield server
    STOP.set()


@pytest.fixture
def server(_server):
    """The tiny-model server with its fault script cleared after each test."""
    STOP.clear()
    yield _server
    STOP.set()
    _server.before_request = None


def backend(server, **options) -> OpenAIBackend:
    """A backend with test-sized waits; its backoff sleeps are recorded, not slept, unless real=True."""
    real = options.pop("real", False)
    llm = OpenAIBackend("tiny", **{"base_url": server.url, "backoff": 0.01, "max_retries": 3, "timeout": 2.0,
                                                         "concurrency": 2, **options})
    if not real:
        llm.sleeps = []
        llm._sleep = llm.sleeps.append
    return llm


def test_429_waits_at_least_retry_after_and_never_past_the_cap(server, hf):
    server.before_request = script = Script({"fox": [status(429, "1")]})
    with backend(server, real=True) as llm:
        start = time.perf_counter()
        assert llm.generate(["The quick brown fox"], GREEDY) == hf.generate(["The quick brown fox"], GREEDY)
        assert time.perf_counter() - start >= 1.0  # Retry-After honoured, though backoff is 0.01
    assert len(script.requests) == 2 and llm.usage.retries == 1

    server.before_request = Script({"fox": [status(429, "3600")] * 2})
    with backend(server, max_backoff=0.5) as llm:
        llm.generate(["The quick brown fox"], GREEDY)
    assert llm.sleeps == [0.5, 0.5]  # an hour asked for, the cap waited


def test_5xx_back_off_exponentially_with_jitter_within_bounded_attempts(server, hf):
    faults = [status(500), status(503), status(500), status(503)]
    server.before_request = script = Script({"fox": list(faults)})
    with backend(server, backoff=0.1, max_backoff=10.0, max_retries=4) as llm:
        assert llm.generate(["The quick brown fox"], GREEDY) == hf.generate(["The quick brown fox"], GREEDY)
    assert len(script.requests) == 5 and len(llm.sleeps) == 4
    for attempt, slept in enumerate(llm.sleeps):  # 50-100% of backoff * 2**attempt
        assert 0.1 * 2**attempt * 0.5 <= slept <= 0.1 * 2**attempt
    assert (llm.usage.retries, llm.usage.failures, llm.usage.calls) == (4, 0, 1)

    server.before_request = script = Script({"fox": [status(503)] * 10})
    with backend(server, max_retries=2) as llm, pytest.raises(RequestFailed, match=r"3 attempt\(s\): HTTP 503"):
        llm.generate(["The quick brown fox"], GREEDY)
    assert len(script.requests) == 3 and (llm.usage.retries, llm.usage.failures) == (2, 1)


def test_connection_reset_mid_body_is_retried(server, hf):
    server.before_request = script = Script({"fox": [reset_mid_body(), reset_mid_body()]})
    with backend(server) as llm:
        assert llm.generate(["The quick brown fox"], GREEDY) == hf.generate(["The quick brown fox"], GREEDY)
    assert len(script.requests) == 3 and llm.usage.retries == 2 and llm.usage.failures == 0


def test_a_server_that_stops_answering_times_out_and_fails_for_good(server):
    server.before_request = script = Script({"fox": [hang()] * 3})
    start = time.perf_counter()
    with backend(server, timeout=0.3, max_retries=1) as llm:
        results = llm.generate_results(["The quick brown fox", "Instruction: summarise"], GREEDY)
    assert time.perf_counter() - start < 3.0  # two timeouts of 0.3 s, not the 5 s hang
    assert isinstance(results[0], RequestFailed) and "timed out after 0.3s" in results[0].message
    assert isinstance(results[1], str)  # the other prompt is not held up
    assert sum("fox" in r for r in script.requests) == 2
    assert (llm.usage.calls, llm.usage.retries, llm.usage.failures) == (2, 1, 1)


@pytest.mark.parametrize("body", [b'{"choices": [{"text": "cut sh', b'{"choices": []}', b"<html>502</html>"])
def test_a_malformed_200_is_retried_then_reported(server, hf, body):
    server.before_request = script = Script({"fox": [malformed(body)]})
    with backend(server) as llm:
        assert llm.generate(["The quick brown fox"], GREEDY) == hf.generate(["The quick brown fox"], GREEDY)
    assert len(script.requests) == 2 and llm.usage.retries == 1

    server.before_request = Script({"fox": [malformed(body)] * 5})
    with backend(server, max_retries=1) as llm, pytest.raises(RequestFailed) as err:
        llm.generate(["The quick brown fox"], GREEDY)
    assert err.value.status == 200 and err.value.attempts == 2
    assert "not JSON" in err.value.message or "unexpected response layout" in err.value.message


def test_generate_parsed_turns_a_failed_request_into_a_reject_not_a_crash(server):
    server.before_request = Script({"item 1": [status(503)] * 10}, answer=lambda b: {
        "choices": [{"index": 0, "text": b["prompt"].upper()}], "usage": {"prompt_tokens": 3, "completion_tokens": 4}})
    items = [f"item {i}" for i in range(4)]
    with backend(server, max_retries=2) as llm, track_usage() as ledger:
        got = generate_parsed(llm, items, lambda x: x, lambda text, item: text, GREEDY, retries=2)
    assert got.results[0] == "ITEM 0" and got.results[2:] == ["ITEM 2", "ITEM 3"]
    reject = got.results[1]
    assert isinstance(reject, Reject) and reject.reason == "llm request failed: HTTP 503"
    assert "injected 503" in reject.extra["error"]  # the server's message is kept
    assert reject.extra["attempts"] == 1  # not re-asked: the backend already retried it
    assert reject.extra["http_attempts"] == 3 and reject.extra["status"] == 503
    used = ledger.entries["openai:tiny"]
    assert (used.calls, used.retries, used.failures) == (4, 2, 1)
    assert (used.prompt_tokens, used.completion_tokens) == (9, 12)  # the three answers' usage fields


# --- a whole stage against a flaky endpoint -----------------------------------------------------

def _bonito_answer(body: dict) -> dict:
    """Chat-mode Bonito answers that parse: an extractive task on the passage's first words."""
    ask = body["messages"][-1]["content"]
    words = ask.split("Passage: ")[1].split()[:3]
    text = f"Task: Which words open the passage?\nAnswer: {' '.join(words)}"
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 10}}


def test_generate_text_stage_keeps_going_and_counts_retries_and_failures(server, tmp_path, monkeypatch):
    cfg = load_config(overrides=[
        "generate.taxonomy.enabled=false", "generate.text.task_types=[exqa]", "model.backend=openai",
        f"model.base_url={server.url}", "model.model=tiny", f"run.out_dir={tmp_path / 'runs'}",
        "model.price_per_million={prompt: 1.0, completion: 2.0}",
    ])
    run = RunFolder(cfg.run_dir())
    run.claim(cfg.fingerprint(), cfg.model_dump_json())
    passages = pl.read_ndjson("data/passages.jsonl")
    keys = [" ".join(t.split()[:3]) for t in passages["text"]]  # one fault script per passage
    faults = {keys[0]: [status(429, "0"), status(503)], keys[1]: [reset_mid_body()],
              keys[2]: [malformed()], keys[3]: [status(503)] * 10, keys[4]: [hang()] * 10}
    server.before_request = Script(faults, answer=_bonito_answer)
    llm = backend(server, max_retries=2, timeout=0.3)
    monkeypatch.setattr(generate_text_stage, "get_llm", lambda *a, **k: llm)
    record_ = run_stage("generate_text", run, cfg)

    n = passages.height
    rows = read_shards(run.generated_examples("generate_text"))
    assert rows.height == n - 2 and rows["id"].n_unique() == rows.height  # none lost but the 2 failed
    failed = [r for r in read_rejects(run.generator("generate_text") / "generated") if "request failed" in r["reason"]]
    assert len(failed) == 2 and {r.get("status") for r in failed} == {503, None}  # 503s, and the timeout
    assert sorted(r["reason"] for r in failed) == ["llm request failed: HTTP 503", "llm request failed: timeout"]
    assert record_["counts"]["reject_reasons"]["llm request failed: HTTP 503"] == 1
    assert record_["rejects"] >= 2 and record_["rows_out"] == n - 2
    used = record_["usage"]["openai:tiny"]
    # retries: 2 + 1 + 1 for the passages that recovered, 2 each for the two that never did
    assert (used["calls"], used["retries"], used["failures"]) == (n, 8, 2)
    assert (used["prompt_tokens"], used["completion_tokens"]) == (100 * (n - 2), 10 * (n - 2))
    assert used["cost"] == pytest.approx((100 * (n - 2) * 1.0 + 10 * (n - 2) * 2.0) / 1e6)
    assert run.load_record("generate_text")["usage"] == record_["usage"]


# --- issue 23: a malformed usage field, credentials in the endpoint URL --------------------------

def test_a_malformed_usage_field_costs_neither_the_item_nor_the_batch(server):
    """One 200 with ``"prompt_tokens": "n/a"``: its text is kept and its tokens count as unknown."""
    def answer(body):
        return {"choices": [{"index": 0, "text": body["prompt"].upper()}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 4}}

    odd = {"choices": [{"index": 0, "text": "ODD"}], "usage": {"prompt_tokens": "n/a", "completion_tokens": None}}
    server.before_request = Script({"item 1": [lambda: (200, odd)]}, answer=answer)
    items = [f"item {i}" for i in range(4)]
    with backend(server) as llm:
        assert llm.generate_results(items, GREEDY) == ["ITEM 0", "ODD", "ITEM 2", "ITEM 3"]
        assert llm.generate(items, GREEDY) == ["ITEM 0", "ITEM 1", "ITEM 2", "ITEM 3"]
    assert (llm.usage.calls, llm.usage.failures, llm.usage.retries) == (8, 0, 0)
    assert (llm.usage.prompt_tokens, llm.usage.completion_tokens) == (3 * 7, 4 * 7)


SECRET_URL_PARTS = ("user", "s3cr3t-pw", "sk-XYZ")


def _secret_url(server) -> str:
    host_port = server.url.split("//", 1)[1]
    return f"http://user:s3cr3t-pw@{host_port}?key=sk-XYZ"


@pytest.mark.parametrize("fault", ["status", "timeout", "refused"])
def test_credentials_in_the_endpoint_url_never_reach_an_error_or_a_reject(server, fault):
    url = _secret_url(server)
    if fault == "refused":
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        url = f"http://user:s3cr3t-pw@127.0.0.1:{port}/v1?key=sk-XYZ"
    server.before_request = Script({"fox": [status(503, "0")] * 10 if fault == "status" else [hang()] * 10})
    with backend(server, base_url=url, max_retries=1, timeout=0.3) as llm:
        (failed,) = llm.generate_results(["The quick brown fox"], GREEDY)
        with pytest.raises(RequestFailed) as raised:
            llm.generate(["The quick brown fox"], GREEDY)
    assert isinstance(failed, RequestFailed)
    shown = [failed.message, str(failed), repr(failed), json.dumps(failed.as_reject()), str(raised.value)]
    assert any("127.0.0.1" in s for s in shown)  # the endpoint is still named
    for text in shown:
        for secret in SECRET_URL_PARTS:
            assert secret not in text, (secret, text)


def test_an_echoed_secret_url_in_a_server_message_is_redacted(server):
    url = _secret_url(server)
    server.before_request = Script({"fox": [lambda: (400, {"error": {"message": f"bad request to {url}"}})]})
    with backend(server, base_url=url) as llm:
        (failed,) = llm.generate_results(["The quick brown fox"], GREEDY)
    assert failed.status == 400 and "bad request to http://127.0.0.1" in failed.message
    assert not any(s in failed.message for s in SECRET_URL_PARTS)
