"""What goes over the wire to an OpenAI-compatible endpoint: the JSON layouts the backend sends and
reads (pipelines.llm.openai_backend), and :class:`RequestFailed`, one request that failed for good."""

from __future__ import annotations

import math
from typing import Any

from pipelines.redact import redact_text

RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})


class RequestFailed(RuntimeError):
    """One request failed for good (retries exhausted, or an error not worth retrying)."""

    def __init__(self, index: int, message: str, status: int | None = None, attempts: int = 1):
        message = redact_text(message)  # a URL's credentials never reach a reject, a log or a traceback
        self.index, self.status, self.attempts, self.message = index, status, attempts, message
        super().__init__(f"request {index} failed after {attempts} attempt(s): {message}")

    @property
    def kind(self) -> str:
        """A short, stable name for grouping: ``HTTP 503``, ``malformed response``, ``timeout``,
        ``connection error``."""
        if self.status == 200:
            return "malformed response"
        if self.status is not None:
            return f"HTTP {self.status}"
        return "timeout" if self.message.startswith("timed out") else "connection error"

    def as_reject(self) -> dict[str, Any]:
        """A row for a rejects file."""
        return {
            "reason": "llm request failed",
            "kind": self.kind,
            "error": self.message,
            "status": self.status,
            "attempts": self.attempts,
        }


def response_format(schema: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's structured-output request field (vLLM's server honours it too)."""
    return {"type": "json_schema", "json_schema": {"name": schema.get("title", "answer"), "schema": schema,
                                                   "strict": True}}


def token_count(value: Any) -> int:
    """A ``usage`` count as the server sent it; anything but a non-negative whole number (``"n/a"``,
    null, -1) counts as unknown (0 tokens), so one odd answer costs neither its item nor the batch."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        return 0
    return int(value)


def completion_text(data: dict[str, Any]) -> str:
    return data["choices"][0]["text"]


def chat_text(data: dict[str, Any]) -> str:
    return data["choices"][0]["message"]["content"]


def token_logprobs(data: dict[str, Any], index: int) -> list[float | None]:
    try:
        values = data["choices"][0]["logprobs"]["token_logprobs"]
    except (KeyError, IndexError, TypeError):
        raise RequestFailed(
            index,
            "response has no choices[0].logprobs.token_logprobs: does the server support echo with logprobs?",
            200,
        ) from None
    return list(values)
