"""The openai backend against a real HTTP server on 127.0.0.1 (pipelines.llm.serve) serving the
tiny model: same texts and losses as the hf backend, retries, timeout, concurrency limit."""

from __future__ import annotations

import threading
import time

import httpx
import numpy as np
import pytest

from pipelines.llm.base import LossRequest, Sampling
from pipelines.llm.hf import HFBackend
from pipelines.llm.openai_backend import OpenAIBackend, RequestFailed
from pipelines.llm.serve import OpenAICompatServer

GREEDY = Sampling(temperature=0.0, max_tokens=8)
PROMPTS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Summarise the text."}],
    "The quick brown fox",
    "Instruction: summarise the text. Response:",
]


@pytest.fixture(scope="module")
def hf(tiny) -> HFBackend:
    return tiny.hf()


@pytest.fixture(scope="module")
def _server(hf):
    with OpenAICompatServer(hf, model_name="tiny") as server:
        yield server


@pytest.fixture
def server(_server):
    """The shared tiny-model server, with its fault-injection hook cleared after each test."""
    yield _server
    _server.before_request = None


def _fail_first(n: int, statuses=(500,)):
    """A hook answering the first ``n`` requests with the given error statuses, in turn."""
    seen = []

    def hook(path, body):
        seen.append(path)
        if len(seen) <= n:
            status = statuses[(len(seen) - 1) % len(statuses)]
            return status, {"error": {"message": f"injected {status}"}}, {"Retry-After": "0"}
        return None

    return hook, seen


def test_generate_matches_hf_backend_at_temperature_zero(server, hf):
    with OpenAIBackend("tiny", base_url=server.url) as llm:
        got = llm.generate(PROMPTS, GREEDY)
    # The server answers one prompt per request, so compare with one-prompt hf calls.
    want = [hf.generate([p], GREEDY)[0] for p in PROMPTS]
    assert got == want
    assert any(want)  # the comparison is not between empty strings only


def test_models_endpoint_and_unknown_route(server):
    assert httpx.get(server.url + "/models").json()["data"][0]["id"] == "tiny"
    assert httpx.post(server.url + "/nope", json={}).status_code == 404


def test_loss_with_tokenizer_matches_hf_backend(server, hf):
    requests = [
        LossRequest(PROMPTS[0], "Paris is the capital of France."),
        LossRequest("The quick", " brown fox jumps over the lazy dog."),
        LossRequest("", "A contract is an agreement."),
    ]
    with OpenAIBackend("tiny", base_url=server.url, tokenizer=hf.tokenizer) as llm:
        got = llm.loss(requests)
    for a, b in zip(got, hf.loss(requests), strict=True):
        assert a.token_nll.shape == b.token_nll.shape and a.token_nll.size > 0
        np.testing.assert_allclose(a.token_nll, b.token_nll, atol=1e-4)


def test_loss_without_tokenizer_scores_string_prompts_only(server, hf):
    # The boundary falls before a space, where this byte-level BPE never merges across it.
    request = LossRequest("The quick", " brown fox jumps over the lazy dog.")
    with OpenAIBackend("tiny", base_url=server.url) as llm:
        (got,) = llm.loss([request])
        with pytest.raises(NotImplementedError, match="chat template: pass tokenizer="):
            llm.loss([LossRequest(PROMPTS[0], "Paris.")])
    np.testing.assert_allclose(got.token_nll, hf.loss([request])[0].token_nll, atol=1e-4)


def test_retries_on_500_and_429_then_succeeds(server, hf):
    server.before_request, seen = _fail_first(3, statuses=(500, 429, 503))
    with OpenAIBackend("tiny", base_url=server.url, max_retries=3, backoff=0.001) as llm:
        assert llm.generate([PROMPTS[2]], GREEDY) == hf.generate([PROMPTS[2]], GREEDY)
    assert len(seen) == 4  # three injected failures, then the real answer


def test_exhausted_retries_raise_or_become_per_item_failures(server):
    server.before_request, seen = _fail_first(10**6, statuses=(503,))
    with OpenAIBackend("tiny", base_url=server.url, max_retries=2, backoff=0.001, concurrency=1) as llm:
        with pytest.raises(RequestFailed, match=r"request 0 failed after 3 attempt\(s\): HTTP 503") as err:
            llm.generate([PROMPTS[2]], GREEDY)
        assert err.value.status == 503 and len(seen) == 3
        results = llm.generate_results(PROMPTS[2:], GREEDY)
    assert [type(r) for r in results] == [RequestFailed, RequestFailed]
    assert [r.index for r in results] == [0, 1]
    assert results[0].as_reject()["reason"] == "llm request failed"


def test_client_errors_are_not_retried(server):
    server.before_request, seen = _fail_first(1, statuses=(400,))
    with OpenAIBackend("tiny", base_url=server.url, max_retries=5, backoff=0.001) as llm:
        with pytest.raises(RequestFailed, match="HTTP 400") as err:
            llm.generate([PROMPTS[2]], GREEDY)
    assert err.value.attempts == 1 and len(seen) == 1


def test_timeout_is_retried_and_reported(server, hf):
    calls, answer = [], threading.Event()

    def slow_first(path, body):
        calls.append(path)
        if len(calls) == 1:
            answer.wait(timeout=30)  # held until the client has given up on it
        return None

    server.before_request = slow_first
    try:
        start = time.perf_counter()
        with OpenAIBackend("tiny", base_url=server.url, timeout=0.2, max_retries=1, backoff=0.001) as llm:
            assert llm.generate([PROMPTS[2]], GREEDY) == hf.generate([PROMPTS[2]], GREEDY)
        assert len(calls) == 2 and time.perf_counter() - start < 1.0  # did not wait for the slow answer

        calls.clear()
        with OpenAIBackend("tiny", base_url=server.url, timeout=0.2, max_retries=0) as llm:
            with pytest.raises(RequestFailed, match=r"timed out after 0.2s"):
                llm.generate([PROMPTS[2]], GREEDY)
    finally:
        answer.set()


def test_connection_refused_is_a_clear_failure():
    with OpenAIBackend("tiny", base_url="http://127.0.0.1:9/v1", max_retries=1, backoff=0.001) as llm:
        with pytest.raises(
            RequestFailed, match=r"after 2 attempt\(s\): connection error to http://127.0.0.1:9/v1"
        ):
            llm.generate(["hi"], GREEDY)


def test_concurrency_limit_is_honoured(server):
    lock, in_flight, peak = threading.Lock(), [0], [0]

    def count(path, body):
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        time.sleep(0.1)
        with lock:
            in_flight[0] -= 1
        return 200, {"choices": [{"index": 0, "text": body["prompt"].upper()}]}

    server.before_request = count
    prompts = [f"prompt {i}" for i in range(12)]
    with OpenAIBackend("tiny", base_url=server.url, concurrency=3) as llm:
        assert llm.generate(prompts, GREEDY) == [p.upper() for p in prompts]  # input order kept
    assert peak[0] == 3


@pytest.mark.integration
def test_serving_the_embedded_model():
    hf = HFBackend.load("embedded")
    prompt = [{"role": "user", "content": "Name one primary colour."}]
    with OpenAICompatServer(hf, model_name="embedded") as server:
        with OpenAIBackend("embedded", base_url=server.url, tokenizer=hf.tokenizer) as llm:
            sampling = Sampling(temperature=0.0, max_tokens=16)
            text = llm.generate([prompt], sampling)[0]
            assert text and text == hf.generate([prompt], sampling)[0]
            request = LossRequest(prompt, "Red.")
            np.testing.assert_allclose(
                llm.loss([request])[0].token_nll, hf.loss([request])[0].token_nll, atol=1e-4
            )
