"""The HTTP layer of the local OpenAI-compatible server (``pipelines/llm/serve.py``): one
request handler class per server that checks the API key, reads the body within its limits,
runs the test hook and routes to the server's endpoint methods, answering errors as OpenAI does.

    ThreadingHTTPServer((host, port), make_handler(server))
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any, Protocol

from pipelines.llm.serve_request import BadRequest


class Endpoints(Protocol):
    """What the handler needs of a server (pipelines.llm.serve.OpenAICompatServer is one): its
    limits, key and hook, and the endpoint methods. A protocol, so this layer imports no server."""

    request_timeout: float
    api_key: str | None
    max_body_bytes: int
    before_request: Callable[[str, bytes], Any] | None

    def models(self) -> Any: ...
    def chat_completions(self, body: Any) -> Any: ...
    def completions(self, body: Any) -> Any: ...


def make_handler(server: Endpoints) -> type[BaseHTTPRequestHandler]:
    """A handler class bound to ``server`` (its limits, key, hook and endpoints)."""

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
