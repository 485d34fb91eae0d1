"""Keep secrets out of what the pipeline writes: errors, rejects, logs, config.json, the card.

    from pipelines.redact import redact_url, redact_text, redact_config
    redact_url("http://user:pw@host:8000/v1?key=sk-1")   # 'http://host:8000/v1'
    redact_text("HTTP 500 from http://u:p@h/v1/x: ...")  # every URL in a message, redacted
    redact_config({"model": {"base_url": ..., "api_key": "sk-1"}})  # URLs redacted, secret keys hidden

An endpoint URL may carry credentials in its userinfo (``user:password@``) and in its query string
(``?key=...``); a URL is shown without both (and without a fragment). Config values under a key
named like a secret (``token``, ``api_key``, ``secret``, ``password``, ...) become ``<redacted>``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

# Config keys whose values must never be shown (e.g. an endpoint's api_key); token_budget is fine.
SECRET_KEY = re.compile(r"(^|_)(token|api_key|apikey|secret|password)$", re.IGNORECASE)
REDACTED = "<redacted>"
# scheme://anything up to whitespace, a quote or a bracket (how URLs sit in messages and reprs)
_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>`]+")


def redact_url(url: str) -> str:
    """``url`` without userinfo, query string and fragment (``http://u:p@h/v1?k=1`` -> ``http://h/v1``).
    A string that does not parse as a URL with a host comes back with everything after '@' and '?' cut."""
    try:
        parts = urlsplit(url)
        scheme, host, port = parts.scheme, parts.hostname, parts.port
    except ValueError:  # e.g. a port that is not a number
        scheme = host = port = None
    if not scheme or host is None:
        # not a URL we can take apart: drop whatever could be credentials
        return url.split("?", 1)[0].rsplit("@", 1)[-1]
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    return urlunsplit((scheme, netloc, parts.path, "", ""))


def redact_text(text: str) -> str:
    """``text`` with every URL in it redacted (:func:`redact_url`)."""
    def one(m: re.Match) -> str:
        url = m.group(0)
        bare = url.rstrip(".,:;)]}")  # punctuation after a URL belongs to the sentence
        return redact_url(bare) + url[len(bare):]

    return _URL.sub(one, text)


def redact_config(value: Any) -> Any:
    """A copy of a config (dicts, lists, strings) with URLs redacted wherever they appear and the
    values of secret-named keys replaced by ``<redacted>``."""
    if isinstance(value, Mapping):
        return {k: REDACTED if SECRET_KEY.search(str(k)) and v else redact_config(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_config(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


# An absolute POSIX path inside any text: a "/" that starts no URL part ("//", "h/v1") and is not
# inside a word ("rows/s", "1/2"), up to whitespace, a quote, a bracket or a separator.
_ABS_PATH = re.compile(r"(?<![\w/.~-])/(?!/)[^\s'\"<>|`,;()\[\]{}]+")


def _portable_path(path: str, roots: tuple[str, ...]) -> str:
    """One absolute path: relative to the first root that holds it (``.`` for the root itself),
    else as rows name their source (pipelines.readers.records.display_path: relative to the working
    directory when inside it, else just its name)."""
    from pipelines.readers.records import display_path

    trail = path[len(path.rstrip(".:")):]  # sentence punctuation after a path stays outside it
    bare = path[:len(path) - len(trail)] if trail else path
    for root in roots:
        root = root.rstrip("/")
        if root and (bare == root or bare.startswith(root + "/")):
            return (bare[len(root) + 1:] or ".") + trail
    return display_path(bare) + trail


def portable_paths(value: Any, roots: tuple[str, ...] = ()) -> Any:
    """A copy of ``value`` (dicts, lists, strings) where every absolute path, alone or inside a
    string (``hf:/home/me/runs/r/conditional/cond-1``), is written relative to the first of
    ``roots`` that holds it (the run folder: ``hf:conditional/cond-1``), else relative to the working
    directory when inside it (``data/pool.jsonl``), else as its file name (``pool.jsonl``): what is
    shared names no user's directory. Keys too (usage is keyed by backend); two keys that come
    out the same are told apart by `` (2)``, ``(3)``... URLs are left to :func:`redact_text`."""
    if isinstance(value, Mapping):
        out: dict[Any, Any] = {}
        for k, v in value.items():
            key, n = portable_paths(k, roots), 2
            while key in out:
                key, n = f"{portable_paths(k, roots)} ({n})", n + 1
            out[key] = portable_paths(v, roots)
        return out
    if isinstance(value, list | tuple):
        return [portable_paths(v, roots) for v in value]
    if isinstance(value, str) and "/" in value:
        return _ABS_PATH.sub(lambda m: _portable_path(m.group(0), roots), value)
    return value
