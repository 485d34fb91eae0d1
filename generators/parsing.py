"""Parse what an LLM wrote: JSON extraction and repair, line formats, refusal detection, retries.

    from generators.parsing import extract_json, is_refusal, generate_parsed, Reject
    extract_json('Sure! ```json\\n{"a": 1,}\\n```')     # -> {"a": 1}  (trailing comma repaired)
    is_refusal("I don't know.")                         # -> True
    is_refusal("If you don't know the formula, derive it.")   # -> False (whole answer, not substring)

Generators keep ``build_prompt(item)`` and ``parse(text, item) -> value | Reject`` apart from the
LLM call; :func:`generate_parsed` (pipelines/llm/retry.py, re-exported here) joins them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

# The bounded-retry LLM call lives in the core (judges and transforms use it too); generators
# import it from here as before.
from pipelines.llm.retry import Attempts, Reject, generate_parsed  # noqa: F401

# ---------------------------------------------------------------------------------------------
# JSON


_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)(?:```|$)", re.S)


def _balanced_prefix(text: str, start: int) -> tuple[str, list[str], bool]:
    """Scan from ``text[start]`` (a ``{`` or ``[``) to its matching close.

    Returns (scanned text, still-open brackets, inside-a-string-at-end). When the brackets
    close, the open list is empty and the text is the complete value.
    """
    stack: list[str] = []
    in_str = esc = False
    for i in range(start, len(text)):
        c = text[i]
        if in_str:
            if esc:
                esc = False
            elif c == "\\":
                esc = True
            elif c == '"':
                in_str = False
            continue
        if c == '"':
            in_str = True
        elif c in "{[":
            stack.append("}" if c == "{" else "]")
        elif c in "}]":
            if stack and stack[-1] == c:
                stack.pop()
                if not stack:
                    return text[start : i + 1], [], False
            else:  # a stray close: stop here and let repair close what is open
                return text[start:i], stack, False
    return text[start:], stack, in_str


def _repairs(candidate: str) -> list[str]:
    """Cheap, common fixes, tried in order: as is, trailing commas, Python literals, single quotes."""
    no_trailing = re.sub(r",\s*([}\]])", r"\1", candidate)
    pythonic = re.sub(
        r"\bTrue\b", "true", re.sub(r"\bFalse\b", "false", re.sub(r"\bNone\b", "null", no_trailing))
    )
    out = [candidate, no_trailing, pythonic]
    if '"' not in candidate:  # only when no double quotes at all, so apostrophes in text survive
        out.append(pythonic.replace("'", '"'))
    # unquoted keys: {name: "x"} -> {"name": "x"}
    out.append(re.sub(r"([{,]\s*)([A-Za-z_][A-Za-z0-9_ ]*?)\s*:", r'\1"\2":', pythonic))
    return out


def _close(candidate: str, open_brackets: list[str], in_string: bool) -> str:
    """Close a truncated value (the answer hit max_tokens): end the string, drop a dangling
    key or comma, then close the open brackets innermost first."""
    text = candidate + ('"' if in_string else "")
    if open_brackets[-1] == "}":  # inside an object a trailing lone string is a key without a value
        text = re.sub(r'([{,])\s*"[^"]*"\s*:?\s*$', r"\1", text.rstrip())
    text = re.sub(r"[,:]\s*$", "", text.rstrip())
    return text + "".join(reversed(open_brackets))


def extract_json(text: str) -> Any | None:
    """The first non-empty JSON object or array in ``text``, repaired where that is cheap and safe; else None.

    Handles code fences, prose around the value, trailing commas, Python literals, single
    quotes (when the text has no double quotes), unquoted keys and answers cut off by max_tokens.
    """
    bodies = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    for body in bodies:
        for start in (i for i, c in enumerate(body) if c in "{["):
            candidate, open_brackets, in_string = _balanced_prefix(body, start)
            if open_brackets:
                candidate = _close(candidate, open_brackets, in_string)
            for attempt in _repairs(candidate):
                try:
                    value = json.loads(attempt)
                except json.JSONDecodeError:
                    continue
                if value:  # an empty {} or [] is what repair makes of noise like "{{{{"
                    return value
    return None


def is_clean_json(text: str) -> bool:
    """Whether ``text`` is one JSON document as it stands (no fences, prose or repair needed)."""
    try:
        json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return False
    return True


# ---------------------------------------------------------------------------------------------
# Line formats (what a small model follows more reliably than nested JSON)


_BULLET = re.compile(r"^\s*(?:[-*•]+|\(?\d{1,3}[.):]|\(?[a-zA-Z][.)])\s+")
_MARKDOWN = re.compile(r"\*\*|__|^#+\s*")


def clean_line(line: str) -> str:
    """A line without its bullet/number, markdown emphasis and surrounding quotes."""
    line = _MARKDOWN.sub("", line.strip())
    line = _BULLET.sub("", line)
    return line.strip().strip("\"'`").strip()


def list_items(text: str) -> list[str]:
    """Non-empty list lines of ``text``, bullets and numbering removed."""
    return [c for c in (clean_line(line) for line in text.splitlines()) if c]


def split_concepts(text: str) -> list[str]:
    """'a, b; c and d' -> ['a', 'b', 'c', 'd'] (order kept, case-insensitive duplicates removed)."""
    parts = re.split(r"[,;]|\band\b", text)
    out, seen = [], set()
    for p in parts:
        p = p.strip().strip(".\"'`*").strip()
        if p and p.casefold() not in seen and len(p) <= 80:
            seen.add(p.casefold())
            out.append(p)
    return out


def labelled(text: str, labels: Sequence[str], stop_labels: Sequence[str] = ()) -> str | None:
    """Text after the first ``Label:`` among ``labels`` (case-insensitive, markdown allowed),
    up to the next line that starts with one of ``stop_labels``; None when no label is found."""
    names = "|".join(re.escape(lab) for lab in labels)
    m = re.search(rf"(?im)^[\s*#_>-]*(?:{names})\s*[*_]*\s*[:：][*_]*\s*", text)
    if not m:
        return None
    rest = text[m.end() :]
    if stop_labels:
        stops = "|".join(re.escape(lab) for lab in stop_labels)
        s = re.search(rf"(?im)^[\s*#_>-]*(?:{stops})\s*[*_]*\s*[:：]", rest)
        if s:
            rest = rest[: s.start()]
    return rest.strip().strip("*_").strip()


# ---------------------------------------------------------------------------------------------
# Refusals: judged on the whole answer, never by substring


_REFUSAL = re.compile(
    r"""^(?:(?:i'?m\s+)?sorry[,.!]?\s*)?(?:but\s+)?
    (?:
        i\s+(?:really\s+|honestly\s+)?(?:do\s+not|don'?t|cannot|can'?t|am\s+unable\s+to|am\s+not\s+able\s+to)\s+
            (?:know|say|tell|answer|help|provide|determine|be\s+sure)
            (?:\s+(?:the|an?|this|that|your)?\s*(?:answer|question|information|with\s+that|that|this|it|for\s+sure))*
        |(?:i\s+am|i'?m)\s+not\s+sure
        |(?:i\s+)?do\s+not\s+know|dont\s+know|not\s+known|no\s+idea|unknown|n/?a|none|not\s+sure
        |(?:there\s+is\s+)?(?:not\s+enough|insufficient)\s+information(?:\s+to\s+answer(?:\s+(?:this|the)\s+question)?)?
        |(?:the\s+)?answer\s+is\s+(?:unknown|not\s+known|not\s+(?:given|provided|stated)(?:\s+in\s+the\s+(?:passage|text))?)
        |(?:as\s+an\s+ai(?:\s+language\s+model)?,?\s+)i\s+(?:cannot|can'?t|do\s+not|don'?t)\b.{0,80}
    )$""",
    re.X | re.I,
)


def is_refusal(text: str) -> bool:
    """True when the *whole* answer declines ("I don't know.", "DO NOT KNOW", "Sorry, I cannot
    answer that question."). An answer that merely contains such words is not a refusal."""
    norm = " ".join(text.replace("’", "'").split()).strip().strip("\"'`*_").strip()
    norm = re.sub(r"^(?:answer|response)\s*:\s*", "", norm, flags=re.I)
    norm = norm.rstrip(".!?").strip()
    return bool(norm) and _REFUSAL.match(norm) is not None


# ---------------------------------------------------------------------------------------------
# Degenerate and unfinished answers


def is_degenerate(text: str, min_words: int = 30) -> bool:
    """A looping answer: few distinct word trigrams ("science, science, science, ...") or a long
    run of a handful of characters ("1.1.1.1.1.1...")."""
    compact = "".join(text.split())
    if len(compact) >= 20 and len(set(compact)) <= 5:
        return True
    words = " ".join(text.casefold().split()).split()
    if len(words) < min_words:
        return False
    grams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
    return len(set(grams)) / len(grams) < 0.35


def trim_unfinished(text: str, min_words: int = 15, min_keep: float = 0.3) -> str:
    """Cut an answer that stops mid-sentence (it hit max_tokens) back to its last full sentence,
    when that keeps at least ``min_keep`` of it; short or finished answers are left alone."""
    if len(text.split()) < min_words or text.rstrip()[-1:] in ".!?)]}\"'`":
        return text
    ends = [m.end() for m in re.finditer(r"[.!?](?=\s)|\n\n", text)]
    cut = ends[-1] if ends else 0
    return text[:cut].rstrip() if cut >= min_keep * len(text) else text
