"""The local OpenAI-compatible server (pipelines.llm.serve) against hostile or broken clients
(issue 23), on 127.0.0.1 with the tiny model: every bad request gets a 4xx with a message -- never
a dropped connection, a 500, a MemoryError or a thread blocked for ever -- and an address other
than loopback is served only with an API key."""

from __future__ import annotations

import json
import socket
import time

import pytest

from pipelines.llm import serve
from pipelines.llm.base import Sampling
from pipelines.llm.hf import HFBackend
from pipelines.llm.openai_backend import OpenAIBackend, RequestFailed
from pipelines.llm.serve import OpenAICompatServer, is_loopback

TIMEOUT_S = 1.0  # the server's socket timeout here: a stalled client is answered after it


@pytest.fixture(scope="module")
def hf(tiny) -> HFBackend:
    return tiny.hf(model_id="tiny", generation_engine="hf")


@pytest.fixture(scope="module")
def server(hf):
    with OpenAICompatServer(hf, model_name="tiny", request_timeout=TIMEOUT_S, max_body_bytes=1 << 20) as s:
        yield s


def raw(server, request: bytes, wait_s: float = 10.0) -> tuple[int, dict]:
    """Send ``request`` as is on a new connection (which stays open) and read one answer."""
    host, port = server._httpd.server_address[:2]
    with socket.create_connection((host, port), timeout=wait_s) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"connection dropped without an answer (got {data!r})"
            data += chunk
        head, body = data.split(b"\r\n\r\n", 1)
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
        while len(body) < length:
            body += sock.recv(65536)
    return int(head.split()[1]), json.loads(body)


def post(path: str, body: bytes, length: str | None = "auto", extra: str = "") -> bytes:
    headers = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{extra}"
    if length is not None:
        headers += f"Content-Length: {len(body) if length == 'auto' else length}\r\n"
    return headers.encode() + b"\r\n" + body


def good(max_tokens=2) -> bytes:
    return json.dumps({"prompt": "hello", "max_tokens": max_tokens, "temperature": 0}).encode()


@pytest.mark.parametrize("length, status, words", [
    (None, 400, "Content-Length is required"),
    ("abc", 400, "non-negative integer"),
    ("-1", 400, "non-negative integer"),
    (str(10**13), 413, "over the limit"),
])
def test_a_bad_content_length_is_a_clear_4xx(server, length, status, words):
    code, answer = raw(server, post("/v1/completions", good(), length))
    assert code == status and words in answer["error"]["message"]
    assert raw(server, post("/v1/completions", good()))[0] == 200  # the server is fine


def test_a_body_shorter_than_its_length_does_not_block_a_thread_for_ever(server):
    started = time.monotonic()
    code, answer = raw(server, post("/v1/completions", b'{"prompt": "x"', length="1000"))
    assert code == 408 and "not received" in answer["error"]["message"]
    assert time.monotonic() - started < TIMEOUT_S + 5


@pytest.mark.parametrize("body, words", [
    (b'{"prompt": "x",', "not JSON"),
    (b"\xff\xfe not utf-8", "not JSON"),
    (b'["prompt", "x"]', "JSON object"),
    (b'{"prompt": "x", "max_tokens": "abc"}', "'max_tokens' must be an integer"),
    (b'{"prompt": "x", "temperature": "hot"}', "'temperature' must be a number"),
    (b'{"prompt": "x", "seed": 1.5}', "'seed' must be an integer"),
    (b'{"prompt": "x", "max_tokens": -3}', "max_tokens >= 0"),
    (b'{"prompt": "x", "stop": 5}', "'stop'"),
    (b'{"prompt": "x", "response_format": "json"}', "'response_format'"),
    (b'{"prompt": [1, "a"]}', "'prompt'"),
    (b'{"prompt": {"a": 1}}', "'prompt'"),
])
def test_a_malformed_completion_request_is_a_400_never_a_500(server, body, words):
    code, answer = raw(server, post("/v1/completions", body))
    assert code == 400 and words in answer["error"]["message"], answer


@pytest.mark.parametrize("body, words", [
    (b'{"messages": "hi"}', "'messages'"),
    (b'{"messages": [{"role": "user", "content": 3}]}', "'role' and 'content'"),
    (b'{"messages": ["hi"]}', "'role' and 'content'"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": "abc"}', "'max_tokens'"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "n": "2"}', "'n'"),
])
def test_a_malformed_chat_request_is_a_400_never_a_500(server, body, words):
    code, answer = raw(server, post("/v1/chat/completions", body))
    assert code == 400 and words in answer["error"]["message"], answer


def test_a_non_loopback_host_needs_an_api_key(hf, monkeypatch, capsys):
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not any(is_loopback(h) for h in ("0.0.0.0", "", "::", "192.168.1.5", "example.com"))
    with pytest.raises(ValueError, match="needs an API key"):
        OpenAICompatServer(hf, host="0.0.0.0")

    def no_model(*a, **k):
        raise AssertionError("the model must not load before the host is checked")

    monkeypatch.setattr("pipelines.llm.make_backend", no_model)
    monkeypatch.delenv("SERVE_API_KEY", raising=False)
    with pytest.raises(SystemExit) as exited:
        serve.main(["--backend", "hf", "--model", "tiny", "--host", "0.0.0.0", "--port", "0"])
    assert exited.value.code == 2 and "--api-key" in capsys.readouterr().err


def test_with_an_api_key_every_request_needs_it(hf):
    with OpenAICompatServer(hf, model_name="tiny", api_key="k3y-s3cret", request_timeout=TIMEOUT_S) as server:
        get = b"GET /v1/models HTTP/1.1\r\nHost: x\r\n"
        for auth in (b"", b"Authorization: Bearer wrong\r\n", b"Authorization: k3y-s3cret\r\n"):
            code, answer = raw(server, get + auth + b"\r\n")
            assert code == 401 and "k3y-s3cret" not in json.dumps(answer)
        assert raw(server, get + b"Authorization: Bearer k3y-s3cret\r\n\r\n")[0] == 200
        assert raw(server, post("/v1/completions", good()))[0] == 401
        sampling = Sampling(temperature=0.0, max_tokens=2)
        with OpenAIBackend("tiny", base_url=server.url, api_key="k3y-s3cret") as llm:
            assert llm.generate(["hello"], sampling) == hf.generate(["hello"], sampling)
        with OpenAIBackend("tiny", base_url=server.url, api_key="nope", max_retries=0) as llm:
            with pytest.raises(RequestFailed) as err:
                llm.generate(["hello"], sampling)
        assert err.value.status == 401
