"""OpenAI request fields checked and turned into :class:`Sampling` for the local server
(``pipelines/llm/serve.py``): a field of the wrong type or range is a :class:`BadRequest`, which
the server answers with a 400 and its message.

    sampling_from_request({"max_tokens": 32, "temperature": 0.2, "stop": "\\n"})
"""

from __future__ import annotations

from typing import Any

from pipelines.llm.base import Sampling


class BadRequest(ValueError):
    """A request the client must fix (answered 400 with this message)."""


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
