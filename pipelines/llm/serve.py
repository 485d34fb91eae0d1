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

The HTTP layer (key, body limits, routing) is ``serve_http.py``; request fields -> Sampling is
``serve_request.py``.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import threading
import time
import uuid
from collections.abc import Callable
from http.server import ThreadingHTTPServer
from typing import Any

from pipelines.llm.base import LLM, Sampling
from pipelines.llm.serve_http import make_handler
from pipelines.llm.serve_request import BadRequest, sampling_from_request

Hook = Callable[[str, dict], "tuple | None"]


MAX_BODY_BYTES = 8 * 1024 * 1024  # a long prompt is ~100 KB; token-id batches stay far below this
REQUEST_TIMEOUT_S = 60.0  # per socket read or write, not per request: generation may take longer


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` serves this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost, or "" (every address)
        return False


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
        self._httpd = ThreadingHTTPServer((host, port), make_handler(self))
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
