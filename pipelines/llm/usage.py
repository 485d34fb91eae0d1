"""What the model calls cost: tokens, calls, retries, failures and seconds, per backend and model.

Every backend adds to its own running total (``llm.usage``, a :class:`Usage`) on each
``generate``/``loss`` call through :func:`record`, and to every ledger opened with
:func:`track_usage` in the calling context. Backends are cached per process and shared by stages
(``flows.stages.get_llm``), so a stage takes "what was used during me" from a ledger, not from
the backend's total:

    from pipelines.llm.usage import track_usage
    with track_usage() as ledger:
        llm.generate(prompts, sampling)
    ledger.to_dict()        # {"hf:embedded": {"prompt_tokens": ..., "completion_tokens": ..., ...}}

Ledgers live in a ``contextvars.ContextVar``: two stages running in two threads of one process
each see only their own calls. Backends that fan requests out to worker threads (openai) add up
the per-request counts and record them once, in the caller's thread.

Fields (per backend):

* ``prompt_tokens``: tokens read (the prompt; for ``loss``, prompt and completion: all input);
* ``completion_tokens``: tokens generated (``loss`` generates none locally; an OpenAI-compatible
  server's one echo token is counted as it reports it);
* ``calls``: items asked for (one per prompt or loss request), ``retries``: extra HTTP attempts
  after the first, ``failures``: items that failed for good, ``seconds``: wall time in the backend.

Token counts come from the server's ``usage`` field (openai; a server that sends none counts 0
tokens for that request) or from the token ids the in-process backends already hold (hf, ct2,
vllm, llamacpp). Generated tokens include the end token where the engine returns it (hf, vLLM);
CTranslate2 drops it, so its counts are one lower per finished answer. :func:`cost` turns
tokens into money with prices per million tokens.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

_LOCK = threading.Lock()
_INT_FIELDS = ("prompt_tokens", "completion_tokens", "calls", "retries", "failures")


@dataclass
class Usage:
    """Counts for one backend (see the module doc for what each field means)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0
    retries: int = 0
    failures: int = 0
    seconds: float = 0.0

    def __add__(self, other: Usage) -> Usage:
        return Usage(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def __sub__(self, other: Usage) -> Usage:
        return Usage(**{f.name: getattr(self, f.name) - getattr(other, f.name) for f in fields(self)})

    def add(self, other: Usage) -> None:
        """In place (thread-safe): ``self += other``."""
        with _LOCK:
            for f in fields(self):
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def copy(self) -> Usage:
        with _LOCK:
            return Usage(**asdict(self))

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["seconds"] = round(d["seconds"], 3)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Usage:
        known = {f.name for f in fields(cls)}
        return cls(**{k: (int(v) if k in _INT_FIELDS else float(v)) for k, v in data.items() if k in known})


def cost(usage: Usage, price: Mapping[str, float] | None) -> float | None:
    """Money for ``usage`` at ``price`` = {"prompt": per million, "completion": per million}; None unpriced."""
    if not price:
        return None
    return (usage.prompt_tokens * float(price.get("prompt", 0.0))
            + usage.completion_tokens * float(price.get("completion", 0.0))) / 1e6


def backend_key(llm: Any) -> str:
    """How a backend is named in ledgers and records: ``<backend>:<model>``."""
    return f"{getattr(llm, 'name', type(llm).__name__)}:{getattr(llm, 'model_id', '?')}"


class UsageLedger:
    """Usage per backend key, added to from any thread."""

    def __init__(self, entries: Mapping[str, Usage] | None = None):
        self._lock = threading.Lock()
        self.entries: dict[str, Usage] = dict(entries or {})

    def add(self, key: str, usage: Usage) -> None:
        with self._lock:
            self.entries[key] = self.entries.get(key, Usage()) + usage

    def merge(self, other: UsageLedger) -> UsageLedger:
        for key, usage in other.entries.items():
            self.add(key, usage)
        return self

    def total(self) -> Usage:
        out = Usage()
        for usage in self.entries.values():
            out = out + usage
        return out

    def __bool__(self) -> bool:
        return bool(self.entries)

    def to_dict(self, prices: Mapping[str, Mapping[str, float] | None] | None = None) -> dict[str, dict[str, Any]]:
        """{key: usage dict}, sorted by key; with ``prices`` ({model id: price}) a ``cost`` per priced key."""
        out = {}
        for key in sorted(self.entries):
            d = self.entries[key].to_dict()
            price = (prices or {}).get(key.split(":", 1)[-1])
            if price:
                d["cost"] = round(cost(self.entries[key], price) or 0.0, 6)
            out[key] = d
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Mapping[str, Any]] | None) -> UsageLedger:
        return cls({k: Usage.from_dict(v) for k, v in (data or {}).items()})


_SCOPES: ContextVar[tuple[UsageLedger, ...]] = ContextVar("llm_usage_scopes", default=())


@contextmanager
def track_usage(ledger: UsageLedger | None = None) -> Iterator[UsageLedger]:
    """A ledger (new, or the one given) of every backend call made in this context; nested
    ledgers each get a copy."""
    ledger = ledger if ledger is not None else UsageLedger()
    token = _SCOPES.set((*_SCOPES.get(), ledger))
    try:
        yield ledger
    finally:
        _SCOPES.reset(token)


def record(llm: Any, usage: Usage) -> None:
    """Add ``usage`` to ``llm.usage`` (when it has one) and to every open ledger."""
    total = getattr(llm, "usage", None)
    if isinstance(total, Usage):
        total.add(usage)
    key = backend_key(llm)
    for ledger in _SCOPES.get():
        ledger.add(key, usage)


@contextmanager
def metered(llm: Any, calls: int) -> Iterator[Usage]:
    """For in-process backends: time the block, count ``calls``; the block fills in the tokens.

    An exception counts every call as failed (and still records what was filled in)."""
    usage = Usage(calls=calls)
    started = time.perf_counter()
    try:
        yield usage
    except BaseException:
        usage.failures += calls
        raise
    finally:
        usage.seconds = time.perf_counter() - started
        record(llm, usage)


def generated_length(ids: Any, end_ids: Any) -> int:
    """Tokens a model generated in one row: up to and including the first end token (the rest
    is padding), or all of them."""
    ends = set(int(i) for i in end_ids)
    seq = ids.tolist() if hasattr(ids, "tolist") else list(ids)
    for k, t in enumerate(seq):
        if t in ends:
            return k + 1
    return len(seq)


# --------------------------------------------------------------------------- stage records
USAGE_COLUMNS = ("prompt_tokens", "completion_tokens", "calls", "retries", "failures", "seconds")


def load_ledger(path: Path) -> UsageLedger:
    """A ledger saved by :func:`save_ledger` (an empty one when the file is absent)."""
    path = Path(path)
    if not path.exists():
        return UsageLedger()
    try:
        return UsageLedger.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError, AttributeError) as e:
        raise ValueError(f"{path}: not a usage ledger ({e})") from None


def save_ledger(ledger: UsageLedger, path: Path) -> None:
    from pipelines.shards import atomic_write_text

    atomic_write_text(Path(path), json.dumps(ledger.to_dict(), indent=2, sort_keys=True))


class PersistedLedger(UsageLedger):
    """A ledger that knows what earlier attempts saved at ``path`` (see :func:`persisted_usage`)."""

    def __init__(self, path: Path, name: Callable[[str], str] | None = None):
        super().__init__()
        self.path, self.prior, self.name = Path(path), load_ledger(path), name

    def saved(self) -> UsageLedger:
        """Earlier attempts plus this one (keys as ``name`` writes them), written to ``path`` now."""
        total = UsageLedger(self.prior.entries)
        for key, usage in list(self.entries.items()):
            total.add(self.name(key) if self.name else key, usage)
        save_ledger(total, self.path)
        return total


@contextmanager
def persisted_usage(path: Path, name: Callable[[str], str] | None = None) -> Iterator[PersistedLedger]:
    """Track the calls made in the block and save them to ``path`` added to what earlier attempts
    saved there, also when the block raises: a retried stage or shard counts every attempt's
    calls (a process killed outright loses only its own attempt's counts). ``ledger.saved()``
    inside the block gives the total so far, for the stage record. ``name`` rewrites the backend
    keys as they are saved (the run folder's: a model inside it by its path there)."""
    ledger = PersistedLedger(path, name)
    with track_usage(ledger):
        try:
            yield ledger
        finally:
            ledger.saved()


def usage_rows(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per (stage, backend) from the stage records' ``usage`` fields, then a total row
    (``cost`` where priced; the total's cost sums the priced rows and says so when some are not)."""
    rows: list[dict[str, Any]] = []
    for rec in records:
        for key, counts in (rec.get("usage") or {}).items():
            rows.append({"stage": rec.get("stage", "?"), "backend": key,
                         **{c: counts.get(c, 0) for c in USAGE_COLUMNS}, "cost": counts.get("cost")})
    if rows:
        total: dict[str, Any] = {"stage": "total", "backend": ""}
        for c in USAGE_COLUMNS:
            total[c] = sum(r[c] for r in rows)
        total["seconds"] = round(total["seconds"], 3)
        priced = [r["cost"] for r in rows if r["cost"] is not None]
        total["cost"] = round(sum(priced), 6) if priced else None
        if priced and len(priced) < len(rows):
            total["backend"] = "(cost: priced rows only)"
        rows.append(total)
    return rows
