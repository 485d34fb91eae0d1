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
OpenAI's ``usage`` token counts when the backend has a tokenizer. Binds to 127.0.0.1 by default; there is no authentication.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pipelines.llm.base import LLM, Sampling

Hook = Callable[[str, dict], "tuple | None"]


class BadRequest(ValueError):
    pass


def sampling_from_request(body: dict[str, Any], default_max_tokens: int = 256) -> Sampling:
    """OpenAI request fields -> Sampling (OpenAI's defaults where a field is absent)."""
    stop = body.get("stop") or ()
    stop = (stop,) if isinstance(stop, str) else tuple(stop)
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens", default_max_tokens))
    if body.get("n", 1) != 1:
        raise BadRequest("only n=1 is supported")
    return Sampling(
        temperature=float(body.get("temperature", 1.0)),
        top_p=float(body.get("top_p", 1.0)),
        max_tokens=int(max_tokens if max_tokens is not None else default_max_tokens),
        seed=int(body.get("seed") or 0),
        stop=stop,
        json_schema=_requested_schema(body),
    )


def _requested_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON schema of an OpenAI ``response_format`` request, handed to the backend (which
    constrains decoding to it when it can: LLM.structured_output)."""
    fmt = body.get("response_format")
    if not fmt or fmt.get("type") != "json_schema":
        return None
    schema = (fmt.get("json_schema") or {}).get("schema")
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
    ):
        self.backend, self.model_name, self.before_request = backend, model_name, before_request
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

        def _route(self, method: str) -> None:
            path = self.path.split("?", 1)[0].rstrip("/")
            body: dict = {}
            if method == "POST":
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except json.JSONDecodeError as e:
                    return self._error(400, f"request body is not JSON: {e}")
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
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (default: local only)")
    ap.add_argument("--port", type=int, default=8000, help="port (0: pick a free one)")
    ap.add_argument("--served-name", default=None, help="model id reported by /v1/models (default: --model)")
    args = ap.parse_args(argv)
    backend = make_backend(args.backend, args.model)
    server = OpenAICompatServer(backend, args.served_name or args.model, args.host, args.port)
    print(f"serving {args.model} ({args.backend}) at {server.url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server._httpd.server_close()


if __name__ == "__main__":
    main()
