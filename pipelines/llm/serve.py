"""A small OpenAI-compatible HTTP server in front of any LLM backend (stdlib only).

    python -m pipelines.llm.serve --model embedded --port 8000           # hf backend, SmolLM2
    python -m pipelines.llm.serve --backend hf --model tiny --port 0      # random tiny model

Then point any OpenAI client (or ``make_backend("openai", base_url="http://127.0.0.1:8000/v1")``)
at it. Endpoints:

* ``GET  /v1/models``
* ``POST /v1/chat/completions``  messages -> ``backend.generate`` (the backend applies its chat template)
* ``POST /v1/completions``       prompt (string or token ids) -> text; with ``echo`` and ``logprobs``
  it returns the prompt's per-token logprobs (first token ``null``), as vLLM does. That needs a
  backend with ``.model`` and ``.tokenizer`` (the hf backend); ``top_logprobs`` holds only the
  actual token.

Requests run one at a time through the backend (a lock: a torch model is not safe to call from
several threads and the CPU is the bottleneck anyway); the HTTP layer itself is threaded, so
clients may hold many connections. ``before_request`` is a hook for tests (fault injection,
counting concurrent requests): it may return ``(status, json_payload[, headers])`` to answer
instead of the backend, or a callable that gets the request handler and writes (or withholds)
the raw response itself: a connection reset mid-body, a body that is not JSON. Answers carry
OpenAI's ``usage`` token counts when the backend has a tokenizer.

Hardening: binds to 127.0.0.1 by default; any other address needs ``api_key`` (``--api-key``, or
$SERVE_API_KEY), checked on every request as ``Authorization: Bearer <key>`` (401 otherwise).
A POST body needs a Content-Length (400 when missing, not a number or negative; 413 above
``max_body_bytes``), and every socket read waits at most ``request_timeout`` seconds, so a client
that promises more bytes than it sends cannot hold a thread for ever. A body that is not a JSON
object, or a field of the wrong type (``"max_tokens": "abc"``), is a 400 with a message; a 500
means the backend itself failed (clients retry those).
"""

from __future__ import annotations

import argparse
import hmac
import ipaddress
import json
import os
import re
import threading
import time
import uuid
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pipelines.llm.base import LLM, Sampling

Hook = Callable[[str, dict], "tuple | None"]


MAX_BODY_BYTES = 8 * 1024 * 1024  # a long prompt is ~100 KB; token-id batches stay far below this
REQUEST_TIMEOUT_S = 60.0  # per socket read or write, not per request: generation may take longer


class BadRequest(ValueError):
    pass


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` serves this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost, or "" (every address)
        return False


def _number(body: dict[str, Any], name: str, default: Any, integer: bool = False) -> Any:
    """``body[name]`` checked to be a number (a whole one if ``integer``); ``default`` when absent or null."""
    value = body.get(name)
    if value is None:
        return default
    kinds = int if integer else int | float
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise BadRequest(f"'{name}' must be {'an integer' if integer else 'a number'}, got {value!r:.40}")
    return value


def sampling_from_request(body: dict[str, Any], default_max_tokens: int = 256) -> Sampling:
    """OpenAI request fields -> Sampling (OpenAI's defaults where a field is absent); BadRequest
    names a field of the wrong type or range."""
    stop = body.get("stop") or ()
    stop = (stop,) if isinstance(stop, str) else stop
    if not isinstance(stop, list | tuple) or not all(isinstance(s, str) for s in stop):
        raise BadRequest("'stop' must be a string or a list of strings")
    key = "max_tokens" if body.get("max_tokens") is not None else "max_completion_tokens"
    max_tokens = _number(body, key, default_max_tokens, integer=True)
    temperature, top_p = _number(body, "temperature", 1.0), _number(body, "top_p", 1.0)
    if max_tokens < 0 or temperature < 0 or not 0 < top_p <= 1:
        raise BadRequest("need max_tokens >= 0, temperature >= 0 and 0 < top_p <= 1")
    if _number(body, "n", 1, integer=True) != 1:
        raise BadRequest("only n=1 is supported")
    return Sampling(
        temperature=float(temperature),
        top_p=float(top_p),
        max_tokens=max_tokens,
        seed=_number(body, "seed", 0, integer=True),
        stop=tuple(stop),
        json_schema=_requested_schema(body),
    )


def _requested_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON schema of an OpenAI ``response_format`` request, handed to the backend (which
    constrains decoding to it when it can: LLM.structured_output)."""
    fmt = body.get("response_format")
    if not fmt:
        return None
    if not isinstance(fmt, dict):
        raise BadRequest("'response_format' must be an object")
    if fmt.get("type") != "json_schema":
        return None
    spec = fmt.get("json_schema") or {}
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if not isinstance(schema, dict):
        raise BadRequest("response_format.json_schema.schema must be an object")
    return schema


class OpenAICompatServer:
    """Serve ``backend`` on ``host:port`` (port 0: a free one) from a background thread."""

    def __init__(
        self,
        backend: LLM,
        model_name: str = "local",
        host: str = "127.0.0.1",
        port: int = 0,
        before_request: Hook | None = None,
        api_key: str | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
        request_timeout: float = REQUEST_TIMEOUT_S,
    ):
        """``api_key``: required as ``Authorization: Bearer <key>`` on every request when set;
        a ``host`` other than loopback refuses to start without one (ValueError)."""
        if not is_loopback(host) and not api_key:
            raise ValueError(f"serving on {host or 'every address'!r} (not loopback) needs an API key: pass "
                             "--api-key (or set $SERVE_API_KEY); clients send it as 'Authorization: Bearer <key>'")
        self.backend, self.model_name, self.before_request = backend, model_name, before_request
        self.api_key, self.max_body_bytes, self.request_timeout = api_key, max_body_bytes, request_timeout
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer((host, port), _make_handler(self))
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False  # a client that hung up must not block stop()
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL for OpenAI clients, ending in /v1."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> OpenAICompatServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="openai-compat-server", daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._httpd.serve_forever()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> OpenAICompatServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- endpoints ----------------------------------------------------------------------------

    def models(self) -> dict:
        return {
            "object": "list",
            "data": [{"id": self.model_name, "object": "model", "owned_by": "instruct-forge"}],
        }

    def chat_completions(self, body: dict) -> dict:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("'messages' must be a non-empty list")
        if not all(isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                   for m in messages):
            raise BadRequest("each message must be an object with string 'role' and 'content'")
        sampling = sampling_from_request(body)
        with self._lock:
            (text,) = self.backend.generate([messages], sampling)
            usage = self._usage(messages, text)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:16]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model_name,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            ],
            **usage,
        }

    def _usage(self, prompt, generated: str, echo_tokens: int = 0) -> dict:
        """OpenAI's ``usage`` field (prompt tokens as the backend's tokenizer counts them, chat
        prompts through its template), or nothing when the backend has no tokenizer."""
        tok = getattr(self.backend, "tokenizer", None)
        if tok is None:
            return {}
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], dict):
            from pipelines.llm.nll import render_chat

            prompt = render_chat(tok, prompt)
        n_prompt = len(prompt) if isinstance(prompt, list) else len(tok(prompt, add_special_tokens=False)["input_ids"])
        n_out = len(tok(generated, add_special_tokens=False)["input_ids"]) if generated else 0
        return {"usage": {"prompt_tokens": n_prompt, "completion_tokens": n_out,
                          "total_tokens": n_prompt + n_out}}

    def completions(self, body: dict) -> dict:
        prompt = body.get("prompt")
        # One prompt (a string or token ids) or a batch of them.
        if isinstance(prompt, str) or (isinstance(prompt, list) and prompt and isinstance(prompt[0], int)):
            prompts = [prompt]
        elif isinstance(prompt, list) and prompt:
            prompts = prompt
        else:
            prompts = []
        if not prompts or not all(isinstance(p, str) or (isinstance(p, list) and p and all(
                isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in p)) for p in prompts):
            raise BadRequest("'prompt' must be a string, a list of token ids, or a list of those")
        sampling = sampling_from_request(body, default_max_tokens=16)
        echo, logprobs = bool(body.get("echo")), body.get("logprobs")
        choices, counts = [], {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        with self._lock:
            for index, p in enumerate(prompts):
                choice, generated = self._one_completion(index, p, sampling, echo, logprobs)
                choices.append(choice)
                one = self._usage(p, generated).get("usage", {})
                counts = {k: counts[k] + one.get(k, 0) for k in counts}
        return {
            "id": f"cmpl-{uuid.uuid4().hex[:16]}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": self.model_name,
            "choices": choices,
            **({"usage": counts} if getattr(self.backend, "tokenizer", None) is not None else {}),
        }

    def _one_completion(self, index: int, prompt, sampling: Sampling, echo: bool, logprobs) -> tuple[dict, str]:
        """One choice, and the text generated for it (for the usage counts)."""
        tok = getattr(self.backend, "tokenizer", None)
        if isinstance(prompt, list):
            if tok is None:
                raise BadRequest("token-id prompts need a backend with a tokenizer")
            ids, text = list(prompt), tok.decode(prompt)
        else:
            ids, text = None, prompt
        generated = self.backend.generate([text], sampling)[0] if sampling.max_tokens > 0 else ""
        choice: dict[str, Any] = {
            "index": index,
            "text": (text if echo else "") + generated,
            "finish_reason": "stop",
        }
        choice["logprobs"] = (
            self._echo_logprobs(text, ids, generated) if echo and logprobs is not None else None
        )
        return choice, generated

    def _echo_logprobs(self, text: str, ids: list[int] | None, generated: str) -> dict:
        """Per-token logprobs of prompt (+ generated text), OpenAI's legacy completions layout."""
        from pipelines.llm.nll import Encoded, score_encoded

        model, tok = getattr(self.backend, "model", None), getattr(self.backend, "tokenizer", None)
        if model is None or tok is None:
            raise BadRequest("echo with logprobs needs a backend with .model and .tokenizer (e.g. hf)")
        if ids is None:
            enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
            ids, offsets = list(enc["input_ids"]), [a for a, _ in enc["offset_mapping"]]
        else:
            pieces = [tok.decode([i]) for i in ids]
            offsets = [sum(len(p) for p in pieces[:k]) for k in range(len(ids))]
        if not ids:
            raise BadRequest("prompt is empty: nothing to score")
        gen_ids = tok(generated, add_special_tokens=False)["input_ids"] if generated else []
        offsets += [len(text) + sum(len(tok.decode([i])) for i in gen_ids[:k]) for k in range(len(gen_ids))]
        all_ids = ids + gen_ids
        values: list[float | None] = [None]
        if len(all_ids) > 1:
            (res,) = score_encoded(model, [Encoded(all_ids[:1], all_ids[1:])], pad_id=tok.pad_token_id or 0)
            values += [-float(v) for v in res.token_nll]
        tokens = [tok.decode([i]) for i in all_ids]
        return {
            "tokens": tokens,
            "token_logprobs": values,
            "top_logprobs": [None if v is None else {t: v} for t, v in zip(tokens, values, strict=True)],
            "text_offset": offsets,
        }


def _make_handler(server: OpenAICompatServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: clients reuse connections
        timeout = server.request_timeout  # each socket read/write: a stalled client frees its thread

        def log_message(self, format, *args):  # quiet: tests and pipelines log their own way
            pass

        def _send(self, status: int, payload: dict, headers: dict | None = None) -> None:
            data = json.dumps(payload).encode("utf-8")
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, str(v))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (e.g. its timeout): nothing to tell it

        def _error(self, status: int, message: str) -> None:
            kind = "invalid_request_error" if status < 500 else "server_error"
            self._send(status, {"error": {"message": message, "type": kind, "code": status}})

        def _refuse(self, status: int, message: str, headers: dict | None = None) -> None:
            """An error answer after which the connection closes (its body may be unread)."""
            self.close_connection = True
            kind = "authentication_error" if status == 401 else "invalid_request_error"
            self._send(status, {"error": {"message": message, "type": kind, "code": status}},
                       {"Connection": "close", **(headers or {})})

        def _authorized(self) -> bool:
            if not server.api_key:
                return True
            given = self.headers.get("Authorization") or ""
            scheme, _, token = given.partition(" ")
            return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), server.api_key.encode())

        def _read_body(self) -> dict | None:
            """The POST body as a JSON object, or None once an error answer was sent."""
            raw = self.headers.get("Content-Length")
            if raw is None:
                return self._refuse(400, "Content-Length is required (chunked bodies are not supported)")
            if not re.fullmatch(r"[0-9]{1,20}", raw.strip()):
                return self._refuse(400, f"Content-Length must be a non-negative integer, got {raw[:40]!r}")
            length = int(raw)
            if length > server.max_body_bytes:
                return self._refuse(413, f"request body of {length} bytes is over the limit of {server.max_body_bytes}")
            try:
                data = self.rfile.read(length)
            except TimeoutError:
                return self._refuse(408, f"request body not received within {server.request_timeout:g}s")
            if len(data) < length:
                return self._refuse(400, f"request body has {len(data)} of its {length} bytes")
            try:
                body = json.loads(data or b"{}")
            except ValueError as e:  # JSONDecodeError, and UnicodeDecodeError for bytes that are not UTF-8
                return self._refuse(400, f"request body is not JSON: {e}")
            if not isinstance(body, dict):
                return self._refuse(400, f"request body must be a JSON object, not {type(body).__name__}")
            return body

        def _route(self, method: str) -> None:
            path = self.path.split("?", 1)[0].rstrip("/")
            if not self._authorized():
                return self._refuse(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                                    {"WWW-Authenticate": "Bearer"})
            body: dict = {}
            if method == "POST":
                body = self._read_body()
                if body is None:
                    return
            if server.before_request is not None:
                answer = server.before_request(path, body)
                if callable(answer):
                    return answer(self)
                if answer is not None:
                    return self._send(*answer)
            routes = {
                ("GET", "/v1/models"): lambda b: server.models(),
                ("POST", "/v1/chat/completions"): server.chat_completions,
                ("POST", "/v1/completions"): server.completions,
            }
            handler = routes.get((method, path))
            if handler is None:
                return self._error(404, f"no route {method} {path}")
            try:
                self._send(200, handler(body))
            except BadRequest as e:
                self._error(400, str(e))
            except Exception as e:  # a backend failure is the server's fault: 500, so clients retry
                self._error(int(HTTPStatus.INTERNAL_SERVER_ERROR), f"{type(e).__name__}: {e}")

        def do_GET(self):
            self._route("GET")

        def do_POST(self):
            self._route("POST")

    return Handler


def main(argv: list[str] | None = None) -> None:
    from pipelines.llm import make_backend

    ap = argparse.ArgumentParser(
        description="Serve an LLM backend over the OpenAI chat/completions protocol."
    )
    ap.add_argument("--backend", default="hf", help="backend name for make_backend (default: hf)")
    ap.add_argument("--model", default="embedded", help="model: embedded, tiny, or a local model folder")
    ap.add_argument("--host", default="127.0.0.1",
                    help="address to bind (default: local only; any other address needs --api-key)")
    ap.add_argument("--port", type=int, default=8000, help="port (0: pick a free one)")
    ap.add_argument("--served-name", default=None, help="model id reported by /v1/models (default: --model)")
    ap.add_argument("--api-key", default=os.environ.get("SERVE_API_KEY"),
                    help="key clients must send as 'Authorization: Bearer <key>' (default: $SERVE_API_KEY; "
                    "required when --host is not loopback)")
    args = ap.parse_args(argv)
    if not is_loopback(args.host) and not args.api_key:  # before the model loads
        ap.error(f"--host {args.host} is not loopback: pass --api-key (or set $SERVE_API_KEY) so that "
                 "only clients with the key are answered")
    backend = make_backend(args.backend, args.model)
    server = OpenAICompatServer(backend, args.served_name or args.model, args.host, args.port, api_key=args.api_key)
    print(f"serving {args.model} ({args.backend}) at {server.url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server._httpd.server_close()


if __name__ == "__main__":
    main()
