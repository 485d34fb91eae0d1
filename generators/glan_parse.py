"""GLAN's parsers: a model's answer (text) -> the level's value, or a Reject with the reason.

    from generators.glan_parse import parse_syllabus
    sessions = parse_syllabus("Session 1: Atoms - what matter is made of | atom, electron", subject)

Pure functions on strings, tested on hand-written answers (tests/test_generators_glan.py). The
prompts (``glan_prompts.py``) ask for a simple line format, which a 135M model follows far more
often than nested JSON; the subjects and syllabus parsers still accept JSON answers from bigger
models (and what the JSON levels' constrained decoding returns).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from generators.glan_prompts import QUESTION_EXAMPLE
from generators.glan_schema import LEVEL_NAMES
from generators.parsing import (
    Reject,
    clean_line,
    extract_json,
    is_degenerate,
    is_refusal,
    list_items,
    split_concepts,
    trim_unfinished,
)
from pipelines.schema import normalise_text


def normalise_level(text: str, default: str) -> str:
    t = text.casefold()
    if any(k in t for k in ("intro", "begin", "basic", "element", "fundament", "101", "first")):
        return "introductory"
    if "inter" in t or "middle" in t:
        return "intermediate"
    if any(k in t for k in ("advanc", "graduate", "expert", "senior", "master")):
        return "advanced"
    return default


def _looks_like_words(text: str) -> bool:
    """Mostly letters, with at least one real word: keeps token soup out of the subject list."""
    letters = sum(c.isalpha() or c.isspace() for c in text)
    return letters >= 0.8 * len(text) and re.search(r"[A-Za-z]{3,}", text) is not None


_PLACEHOLDERS = {"name", "subject", "subject name", "level", "subtopics", "title", "key concepts", "..."}


def parse_subjects(text: str, discipline: dict[str, Any]) -> list[dict[str, Any]] | Reject:
    """Subjects from ``name | level | subtopics`` lines (or a JSON list of {name, level, subtopics})."""
    data = extract_json(text) if ("{" in text or "[" in text) else None
    rows: list[tuple[str, str, list[str]]] = []
    if isinstance(data, dict):
        data = next((v for v in data.values() if isinstance(v, list)), [data])
    if isinstance(data, list) and data:
        for x in data:
            if isinstance(x, dict):
                name = str(x.get("name") or x.get("subject") or x.get("title") or "")
                sub = x.get("subtopics") or x.get("topics") or []
                sub = split_concepts(sub) if isinstance(sub, str) else [str(s) for s in sub]
                rows.append((name, str(x.get("level", "")), sub))
            elif isinstance(x, str):
                rows.append((x, "", []))
    else:
        for line in list_items(text):
            parts = [p.strip() for p in line.split("|")]
            if len(parts) == 1:
                name, rest = (re.split(r"\s+[-–:]\s+", line, maxsplit=1) + [""])[:2]
                parts = [name, "", rest]
            name, level, sub = (parts + ["", ""])[:3]
            if len(parts) == 2:  # name | subtopics, or name | level
                level, sub = (parts[1], "") if normalise_level(parts[1], "") else ("", parts[1])
            rows.append((name, level, split_concepts(sub)))
    out, seen = [], set()
    for i, (name, level, sub) in enumerate(rows):
        name = clean_line(name).rstrip(".:")
        key = normalise_text(name)
        if not (2 <= len(name) <= 80) or key in _PLACEHOLDERS or key in seen or len(name.split()) > 10:
            continue
        if not _looks_like_words(name):
            continue
        seen.add(key)
        default = LEVEL_NAMES[min(i * len(LEVEL_NAMES) // max(len(rows), 1), len(LEVEL_NAMES) - 1)]
        subtopics = [s for s in sub if normalise_text(s) not in _PLACEHOLDERS][:8]
        out.append({"subject": name, "level": normalise_level(level, default), "subtopics": subtopics})
    if not out:
        return Reject("no subject line (name | level | subtopics) found", text)
    return out


_SESSION = re.compile(r"^(?:session|class|lecture|week)\s*(\d+)\s*[:.)-]?\s*", re.I)


def parse_syllabus(
    text: str, subject: dict[str, Any], require_concepts: bool = True
) -> list[dict[str, Any]] | Reject:
    """Sessions from ``Session N: title - description | key concepts`` lines (or JSON).

    With ``require_concepts`` False, sessions without concepts are kept (their concepts are
    asked for in a second call); otherwise they are dropped."""
    sessions: list[dict[str, Any]] = []
    data = extract_json(text) if ("{" in text or "[" in text) else None
    if isinstance(data, dict):
        data = next((v for v in data.values() if isinstance(v, list)), [data])
    if isinstance(data, list) and data and all(isinstance(x, dict) for x in data):
        for x in data:
            concepts = x.get("key_concepts") or x.get("concepts") or x.get("key concepts") or []
            concepts = split_concepts(concepts) if isinstance(concepts, str) else [str(c) for c in concepts]
            sessions.append(
                {
                    "title": str(x.get("title") or x.get("name") or ""),
                    "description": str(x.get("description") or ""),
                    "key_concepts": concepts,
                }
            )
    else:
        for raw in text.splitlines():
            line = _SESSION.sub("", clean_line(raw))
            if not line:
                continue
            m = re.search(r"key\s*concepts?\s*[:：]", line, re.I)
            if "|" in line:
                head, _, concepts = line.partition("|")
                concepts = re.sub(r"(?i)^\s*key\s*concepts?\s*[:：]", "", concepts).replace("|", ",")
            elif m:
                head, concepts = line[: m.start()], line[m.end() :]
            elif sessions and re.match(r"(?i)^(concepts?|topics?)\s*[:：]", line):
                sessions[-1]["key_concepts"] += split_concepts(line.split(":", 1)[1])
                continue
            else:
                head, concepts = line, ""
            sep = re.search(r"\s[-–]\s|:\s", head)
            title, desc = (head[: sep.start()], head[sep.end() :]) if sep else (head, "")
            if not concepts and desc.count(",") >= 2:  # "title - a, b, c": the "|" was left out
                concepts, desc = desc, ""
            sessions.append(
                {
                    "title": title.strip(" .:-"),
                    "description": desc.strip(" .:-"),
                    "key_concepts": split_concepts(concepts),
                }
            )
    out, seen = [], set()
    for s in sessions:
        key = normalise_text(s["title"])
        concepts = clean_concepts(s["key_concepts"])
        # A session is only usable with a title and (in the end) at least one key concept.
        if not key or key in seen or key in _PLACEHOLDERS or len(s["title"]) > 120:
            continue
        if require_concepts and not concepts:
            continue
        seen.add(key)
        out.append({**s, "description": s["description"][:300], "key_concepts": concepts})
    if not out:
        reason = (
            "degenerate repetition"
            if is_degenerate(text)
            else "no session with a title and key concepts found"
        )
        return Reject(reason, text)
    return out


def clean_concepts(concepts: Sequence[str], limit: int = 6) -> list[str]:
    """At most ``limit`` distinct concepts of a few words, placeholders and loops
    ("ecosystems ecosystems") removed."""
    out, seen = [], set()
    for c in concepts:
        key = normalise_text(c)
        words = key.split()
        if not key or key in seen or key in _PLACEHOLDERS or len(words) > 8 or len(set(words)) < len(words):
            continue
        seen.add(key)
        out.append(c.strip())
    return out[:limit]


def parse_concepts(text: str, pair: Any = None) -> list[str] | Reject:
    """A comma-separated list of key concepts (first non-empty line; a label is allowed)."""
    lines = [ln for ln in list_items(text) if ln]
    if not lines:
        return Reject("no key concepts", text)
    first = re.sub(r"(?i)^(?:key\s*)?concepts?\s*[:：]\s*", "", lines[0])
    concepts = (
        clean_concepts(split_concepts(first)) if ("," in first or ";" in first) else clean_concepts(lines[:6])
    )
    if not concepts:
        return Reject("no key concepts", text)
    return concepts


_ECHO = ("write a homework question", "homework question for", "key concepts:")


def parse_question(text: str, spec: dict[str, Any]) -> str | Reject:
    """One question: labels stripped, anything after an ``Answer:`` line cut off."""
    if is_refusal(text):
        return Reject("refusal", text)
    body = re.split(r"(?im)^\s*[*_]*(?:answer|solution|hint)s?[*_]*\s*[:：]", text)[0]
    body = re.sub(
        r"(?i)^\s*[*_]*(?:homework\s+)?(?:question|problem|exercise)\s*\d*[*_]*\s*[:：][*_]*\s*",
        "",
        body.strip(),
    )
    body = body.strip().strip("\"'`").strip()
    if is_degenerate(body):
        return Reject("degenerate repetition", text)
    if len(body.split()) < 5:
        return Reject("question shorter than 5 words", text)
    if len(body) > 1500:
        return Reject("question longer than 1500 characters", text)
    if any(e in body.casefold() for e in _ECHO) or normalise_text(body) == normalise_text(
        QUESTION_EXAMPLE[1]
    ):
        return Reject("echoes the prompt or its example", text)
    return body


def parse_answer(text: str, question: dict[str, Any]) -> str | Reject:
    answer = re.sub(r"(?i)^\s*[*_]*(?:answer|solution)[*_]*\s*[:：][*_]*\s*", "", text.strip()).strip()
    if not answer:
        return Reject("empty answer", text)
    if is_refusal(answer):
        return Reject("refusal", text)
    if is_degenerate(answer):
        return Reject("degenerate repetition", text)
    return trim_unfinished(answer)
