"""An LLM call with bounded retries: generate, parse, re-ask only what did not parse.

    from pipelines.llm.retry import generate_parsed, Reject
    res = generate_parsed(llm, items, build_prompt, parse, Sampling(max_tokens=64), retries=2)
    res.results     # per item: the parsed value, or a Reject (reason, raw answer, attempts)

Callers keep ``build_prompt(item)`` and ``parse(text, item) -> value | Reject`` apart from the
LLM call; :func:`generate_parsed` joins them: one batched ``generate`` per attempt, a bounded
number of retries (new seed) for the items whose answer did not parse, and a :class:`Reject`
with the reason and the raw answer for the items that never parsed. Generators, the judge score
and transforms all use it, so a failed request or an unparseable answer is handled one way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from pipelines.llm.base import Prompt, Sampling

_RAW_CHARS = 2000  # how much of a rejected answer the rejects file keeps


@dataclass
class Reject:
    """An LLM answer that could not be used: why, and what it was."""

    reason: str
    raw: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self, **context: Any) -> dict[str, Any]:
        d = asdict(self)
        d["raw"] = d["raw"][:_RAW_CHARS]
        extra = d.pop("extra")
        return {**context, **extra, **d}


def _call(
    llm: Any, prompts: list[Prompt], sampling: Sampling, progress: Callable[[int], None] | None
) -> list[str | Reject]:
    """``llm.generate`` with the progress callback (every backend takes one: pipelines.llm.base.LLM);
    each finished batch and the tokens it produced also reach the stage's active progress bar.
    Backends with ``generate_results`` (openai) are called through it: a prompt whose request
    failed for good (after the backend's own retries) comes back as a Reject with the reason."""
    from pipelines.progress import on_batch, on_tokens

    def batch_done(n: int) -> None:
        on_batch(n)
        if progress is not None:
            progress(n)

    per_item = getattr(llm, "generate_results", None)
    if per_item is not None:
        texts = [t if isinstance(t, str) else _request_reject(t)
                 for t in per_item(prompts, sampling, progress=batch_done)]
    else:
        texts = llm.generate(prompts, sampling, progress=batch_done)
    tokenizer = getattr(llm, "tokenizer", None)
    if tokenizer is not None:
        on_tokens(sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts if isinstance(t, str)))
    return texts


def _request_reject(failure: Any) -> Reject:
    """A failed request (pipelines.llm.openai_backend.RequestFailed) as a Reject with its reason."""
    info = failure.as_reject() if hasattr(failure, "as_reject") else {"error": str(failure)}
    # A short reason (counts group by it); the server's whole message stays in "error".
    reason = f"{info.pop('reason', 'llm request failed')}: {info.pop('kind', None) or info.get('error', failure)}"
    if "attempts" in info:  # HTTP attempts; "attempts" in a reject counts generate_parsed's rounds
        info["http_attempts"] = info.pop("attempts")
    return Reject(reason, "", {"request_failed": True, **info})


@dataclass
class Attempts:
    """What :func:`generate_parsed` did: per item a parsed value or a Reject, and how many calls."""

    results: list[Any]
    generated: int = 0  # LLM answers produced (all attempts)
    retried: int = 0  # items that needed more than one attempt


def generate_parsed(
    llm: Any,
    items: Sequence[Any],
    build_prompt: Callable[[Any], Prompt],
    parse: Callable[[str, Any], Any],
    sampling: Sampling,
    retries: int = 2,
    progress: Callable[[int], None] | None = None,
    retry_temperature: float | None = None,
) -> Attempts:
    """Generate for every item in one batched call, re-ask (new seed) only the items whose
    answer did not parse, at most ``retries`` more times; the last Reject is kept with the
    number of attempts. ``parse`` returns a value or a :class:`Reject`; it may also raise
    ValueError, which becomes a Reject with the message as reason. A prompt whose request failed
    for good (see :func:`_call`) is a Reject at once, not re-asked. ``retry_temperature``: the
    temperature of the re-asks (e.g. a greedy first answer, then samples that can differ)."""
    results: list[Any] = [None] * len(items)
    prompts = [build_prompt(item) for item in items]
    pending = list(range(len(items)))
    out = Attempts(results)
    for attempt in range(retries + 1):
        if not pending:
            break
        s = replace(sampling, seed=sampling.seed + 7919 * attempt)
        if attempt and retry_temperature is not None:
            s = replace(s, temperature=retry_temperature)
        texts = _call(llm, [prompts[i] for i in pending], s, progress)
        out.generated += len(texts)
        still = []
        for i, text in zip(pending, texts, strict=True):
            if isinstance(text, Reject):  # the request failed for good: the backend already retried
                text.extra["attempts"] = attempt + 1
                results[i] = text
                continue
            try:
                value = parse(text, items[i])
            except ValueError as e:
                value = Reject(str(e), text)
            if isinstance(value, Reject):
                value.extra["attempts"] = attempt + 1
                still.append(i)
            results[i] = value
        if attempt > 0:
            out.retried += len(pending)
        pending = still
    return out
