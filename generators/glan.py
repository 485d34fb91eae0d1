"""GLAN (arXiv 2402.13064): taxonomy -> subjects -> syllabus -> homework questions -> answers.

    python -m generators.glan data/taxonomy.yaml runs/glan --max-disciplines 2 --subjects 2 \\
        --sessions 4 --questions 2 [--model embedded]

    from generators.glan import run_glan
    counts = run_glan("data/taxonomy.yaml", "runs/glan", make_backend("hf"), max_disciplines=2)

Every level is its own table of shards in the run folder, reusable as input:

| folder            | one row per                    | made by                                     |
|-------------------|--------------------------------|---------------------------------------------|
| disciplines/      | discipline                     | the taxonomy file                           |
| subjects/         | subject (name, level, subtopics)| ``queries_per_discipline`` LLM queries each |
| syllabi/          | class session (title, description, key_concepts) | one LLM query per subject  |
| questions/        | homework question              | sampled sessions + key concepts, one query  |
| questions_unique/ | question kept after dedup      | normalised hash + MinHash (dropped.jsonl)   |
| examples/         | example (core schema)          | one answer query per question               |

Each level is also a function of its own (``run_subjects``, ``run_syllabi``, ``run_questions``,
``dedup_questions``, ``run_examples``): input table, llm, that level's folder and
:class:`GlanSettings` in, :class:`LevelRun` (table + counts) out; ``run_glan`` chains them:

    syllabi = run_syllabi(subjects, llm, Path("runs/glan/syllabi"), GlanSettings(seed=1)).table

Edit a level's rows (or pass an edited table, e.g. ``run/subjects`` or a ``.jsonl``, in place
of the taxonomy) and run again: only the shards whose input changed are regenerated, and a
killed run resumes where it stopped (see ``levels.py``). Rejected answers go to each folder's
``rejects-*.jsonl`` with the reason; ``counts.json`` has the counts per level.

Counts are checked against what was asked (:func:`at_least`): a subjects answer with fewer than
``subjects_per_discipline`` subjects, or a syllabus with fewer than ``sessions`` sessions, is
re-asked within the retry bound and then rejected ("fewer sessions than asked", with ``got`` and
``asked``), not kept short. What a level still falls short by (a discipline whose answers were
all rejected, sessions whose key concepts never came, questions rejected) is in ``counts.json``
``shortfalls``; subjects or sessions beyond the number asked are left out and counted
(``surplus_cut``); ``notes`` says all of it in sentences (stage record and run report).

Key concepts (as in the paper, both modes): ``one`` = one session, 1..min(5, m) of its m
concepts; ``two`` = two sessions, 2..min(5, m1+m2) concepts from the union of theirs.
Prompts (``glan_prompts.py``) are few-shot with a simple line format, which a 135M model follows
far more often than nested JSON; the parsers still accept JSON answers from bigger models.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import astuple, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import polars as pl

from generators.dedup import dedup_rows
from generators.glan_prompts import (  # all re-exported: callers import prompts from here too
    CONCEPTS_ASK,  # noqa: F401
    CONCEPTS_EXAMPLE,  # noqa: F401
    LEVEL_SCHEMAS,
    PROMPTS_FINGERPRINT,
    QUESTION_ASK,  # noqa: F401
    QUESTION_EXAMPLE,
    SUBJECTS_ASK,  # noqa: F401
    SUBJECTS_EXAMPLE,  # noqa: F401
    SYLLABUS_ASK,  # noqa: F401
    SYLLABUS_EXAMPLE,  # noqa: F401
    _few_shot,  # noqa: F401
    answer_prompt,
    ask_for_json,
    concepts_prompt,
    question_prompt,
    subjects_prompt,
    syllabus_prompt,
)
from generators.levels import (
    derive_seed,
    fingerprint,
    level_rejects,
    read_level,
    run_level,
)
from generators.parsing import (
    Attempts,
    Reject,
    clean_line,
    extract_json,
    generate_parsed,
    is_clean_json,
    is_degenerate,
    is_refusal,
    list_items,
    split_concepts,
    trim_unfinished,
)
from generators.taxonomy import load_taxonomy
from pipelines.llm.base import Messages, Sampling
from pipelines.progress import StageBar
from pipelines.schema import make_example, normalise_text, to_table
from pipelines.shards import atomic_write_jsonl, atomic_write_text, write_shards

LEVELS = ("disciplines", "subjects", "syllabi", "questions", "questions_unique", "examples")
LEVEL_NAMES = ("introductory", "intermediate", "advanced")
# Paper settings: temperature 1.0 for subjects/syllabus/questions, 0.7 for answers; top_p 0.95.
PAPER_TEMPERATURE = {"subjects": 1.0, "syllabi": 1.0, "questions": 1.0, "examples": 0.7}

S = pl.Utf8
SCHEMAS: dict[str, dict[str, Any]] = {
    "disciplines": {"discipline_id": S, "field": S, "subfield": S, "discipline": S, "description": S},
    "subjects": {
        "subject_id": S,
        "discipline_id": S,
        "field": S,
        "subfield": S,
        "discipline": S,
        "subject": S,
        "level": S,
        "subtopics": S,
    },
    "syllabi": {
        "session_id": S,
        "subject_id": S,
        "discipline_id": S,
        "field": S,
        "subfield": S,
        "discipline": S,
        "subject": S,
        "level": S,
        "session": pl.Int64,
        "title": S,
        "description": S,
        "key_concepts": S,
    },
    "questions": {
        "question_id": S,
        "subject_id": S,
        "field": S,
        "subfield": S,
        "discipline": S,
        "subject": S,
        "level": S,
        "mode": S,
        "sessions": S,
        "key_concepts": S,
        "question": S,
    },
}


# ---------------------------------------------------------------------------------------------
# Parsers: text -> value | Reject (tested on strings)


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


# ---------------------------------------------------------------------------------------------
# Key-concept sampling (seeded; both modes of the paper)


def sample_concepts(
    sessions: Sequence[dict[str, Any]], rng: random.Random, mode: str
) -> tuple[list[int], list[str]]:
    """(indices of the chosen sessions, chosen concepts).

    ``one``: one session, k in 1..min(5, m) of its m concepts. ``two``: two distinct sessions,
    k in 2..min(5, m1 + m2) concepts drawn from the union of theirs (duplicates merged; if the
    union has fewer than 2 distinct concepts, all of it).
    """
    usable = [i for i, s in enumerate(sessions) if s["key_concepts"]]
    if mode == "one" or len(usable) < 2:
        i = rng.choice(usable)
        concepts = list(sessions[i]["key_concepts"])
        k = rng.randint(1, min(5, len(concepts)))
        return [i], rng.sample(concepts, k)
    if mode != "two":
        raise ValueError(f"unknown sampling mode {mode!r}: use 'one' or 'two'")
    i, j = sorted(rng.sample(usable, 2))
    union = list(dict.fromkeys(sessions[i]["key_concepts"] + sessions[j]["key_concepts"]))
    m1m2 = len(sessions[i]["key_concepts"]) + len(sessions[j]["key_concepts"])
    k = rng.randint(2, min(5, m1m2)) if len(union) >= 2 else len(union)
    return [i, j], rng.sample(union, min(k, len(union)))


def question_specs(
    syllabi: pl.DataFrame, per_syllabus: int, seed: int, modes: Sequence[str] = ("one", "two")
) -> list[dict[str, Any]]:
    """Per subject, ``per_syllabus`` (sessions, concepts) draws; the mode is drawn from ``modes``."""
    specs = []
    if syllabi.height == 0:
        return specs
    for part in syllabi.sort("subject_id", "session", maintain_order=True).partition_by(
        "subject_id", maintain_order=True
    ):
        rows = part.to_dicts()
        sessions = [{**r, "key_concepts": json.loads(r["key_concepts"] or "[]")} for r in rows]
        if not any(s["key_concepts"] for s in sessions):
            continue
        first = rows[0]
        for q in range(per_syllabus):
            rng = random.Random(derive_seed(seed, "question", first["subject_id"], q))
            mode = rng.choice(list(modes))
            picked, concepts = sample_concepts(sessions, rng, mode)
            actual = "two" if len(picked) == 2 else "one"
            specs.append(
                {
                    "subject_id": first["subject_id"],
                    "field": first["field"],
                    "subfield": first["subfield"],
                    "discipline": first["discipline"],
                    "subject": first["subject"],
                    "level": first["level"],
                    "mode": actual,
                    "sessions": [sessions[i]["title"] for i in picked],
                    "key_concepts": concepts,
                    "index": q,
                }
            )
    return specs


# ---------------------------------------------------------------------------------------------
# Tables: ids, empty-safe tables, the level a run starts from


def _id(*parts: Any) -> str:
    return fingerprint(list(parts))


def _rows_table(rows: list[dict[str, Any]], level: str) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=SCHEMAS[level]) if rows else pl.DataFrame(schema=SCHEMAS[level])


def _load_start(path: Path) -> tuple[str, pl.DataFrame]:
    """A taxonomy file -> disciplines table; or an earlier level's table (folder of shards,
    .parquet, .jsonl) -> (that level, its table), recognised by its columns."""
    path = Path(path)
    if not (path.is_dir() or path.suffix in (".parquet", ".jsonl")):
        rows = [
            {
                "discipline_id": _id(d.field, d.subfield, d.name),
                "field": d.field,
                "subfield": d.subfield,
                "discipline": d.name,
                "description": d.description,
            }
            for d in load_taxonomy(path)
        ]
        return "disciplines", _rows_table(rows, "disciplines")
    if path.is_dir():
        table = read_level(path)
    elif path.suffix == ".parquet":
        table = pl.read_parquet(path)
    else:
        table = pl.read_ndjson(path, infer_schema_length=None)
    for level in ("questions", "syllabi", "subjects", "disciplines"):
        missing = set(SCHEMAS[level]) - set(table.columns)
        if not missing:
            return level, table.select(list(SCHEMAS[level])).cast(SCHEMAS[level])
    raise ValueError(
        f"{path}: not a taxonomy file nor a GLAN level table (columns {table.columns}; a subjects "
        f"table needs {sorted(SCHEMAS['subjects'])})"
    )




# ---------------------------------------------------------------------------------------------
# One function per LLM level: (input table, llm, that level's folder, settings) -> LevelRun

_DISCIPLINE_COLS = ("discipline_id", "field", "subfield", "discipline")
_SUBJECT_COLS = ("subject_id", *_DISCIPLINE_COLS, "subject", "level")
_SPEC_COLS = ("subject_id", "field", "subfield", "discipline", "subject", "level", "mode")
_META_COLS = ("field", "subfield", "discipline", "subject", "level", "mode", "question_id")


@dataclass(frozen=True)
class GlanSettings:
    """Sampling and sharding that every LLM level shares (each level's sizes are its own arguments)."""

    seed: int = 0
    shard_size: int = 16
    max_tokens: int = 256
    temperature: float | None = None  # None: the paper's value per level (PAPER_TEMPERATURE)
    top_p: float = 0.95
    retries: int = 2
    progress: bool = False
    structured: bool = False  # the backend constrains decoding to a JSON schema (LLM.structured_output)

    def sampling(self, level: str, max_tokens: int, items: Sequence[Any]) -> Sampling:
        """Seeded by the run seed, the level and what is asked, so a rerun asks the same. With a
        ``structured`` backend the JSON levels ask for their schema (LEVEL_SCHEMAS)."""
        t = PAPER_TEMPERATURE[level] if self.temperature is None else self.temperature
        seed = derive_seed(self.seed, level, list(items))
        schema = LEVEL_SCHEMAS.get(level) if self.structured else None
        return Sampling(temperature=t, top_p=self.top_p, max_tokens=max_tokens, seed=seed, json_schema=schema)

    def prompt(self, level: str, messages: Messages) -> Messages:
        """The level's prompt, asking for its JSON schema when decoding is constrained to it."""
        schema = LEVEL_SCHEMAS.get(level) if self.structured else None
        return messages if schema is None else ask_for_json(messages, schema)


@dataclass(frozen=True)
class Calls:
    """LLM answers a level asked for, summed over the shards it generated (none when resumed)."""

    generated: int = 0
    retried: int = 0
    concept_calls: int = 0  # syllabi only: sessions whose key concepts took a second query
    # JSON levels (subjects, syllabi): answers read, and those that were not a clean JSON document
    # and went through extraction/repair or the line format.
    json_answers: int = 0
    repaired: int = 0
    # Subjects or sessions an answer gave beyond what was asked, left out (said in counts.json).
    surplus: int = 0

    @classmethod
    def of(cls, attempts: Attempts, concept_calls: int = 0, repairs: RepairCount | None = None,
           surplus: int = 0) -> Calls:
        r = repairs or RepairCount()
        return cls(attempts.generated, attempts.retried, concept_calls, r.answers, r.repaired, surplus)

    def __add__(self, other: Calls) -> Calls:
        return Calls(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))


@dataclass
class RepairCount:
    """Counts, for a JSON level's parser, how many answers needed repair (see :func:`counting`)."""

    answers: int = 0
    repaired: int = 0

    def counting(self, parse: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
        def wrapped(text: str, item: Any) -> Any:
            self.answers += 1
            self.repaired += not is_clean_json(text)
            return parse(text, item)

        return wrapped


@dataclass
class LevelRun:
    """What a level returns: its whole table (shards kept from earlier runs included) and counts."""

    table: pl.DataFrame
    outcome: dict[str, int]  # LevelOutcome.as_dict(): rows, rejects, shards, skipped/stale shards
    calls: Calls


_Chunk = Callable[[Sequence[Any]], tuple[pl.DataFrame, list[dict[str, Any]], Calls]]


def at_least(parse: Callable[[str, Any], Any], asked: int, what: str) -> Callable[[str, Any], Any]:
    """``parse`` whose list answer must hold the ``asked`` items the prompt asked for: fewer is a
    Reject ("fewer <what> than asked", with ``got`` and ``asked``), so the item is re-asked within
    the retry bound and then kept in the level's rejects instead of going on short."""

    def checked(text: str, item: Any) -> Any:
        value = parse(text, item)
        if isinstance(value, list) and len(value) < asked:
            return Reject(f"fewer {what} than asked", text, {"got": len(value), "asked": asked})
        return value

    return checked


def _model_name(llm: Any) -> str:
    return getattr(llm, "model_id", getattr(llm, "name", type(llm).__name__))


def _run(
    name: str,
    items: list[Any],
    folder: Path,
    process: _Chunk,
    params: dict[str, Any],
    llm: Any,
    settings: GlanSettings,
) -> LevelRun:
    """:func:`run_level` with a bar, plus what every level's fingerprint holds (model, seed,
    prompts), so changing any of them regenerates the level; sums the calls shard by shard."""
    calls: list[Calls] = []

    def counted(chunk: Sequence[Any]) -> tuple[pl.DataFrame, list[dict[str, Any]]]:
        table, rejects, used = process(chunk)
        calls.append(used)
        return table, rejects

    params = {**params, "model": _model_name(llm), "seed": settings.seed, "prompts": PROMPTS_FINGERPRINT,
              **({"structured": True} if settings.structured else {})}
    # Items done per shard; generation batches and tok/s in between (pipelines.progress).
    bar = StageBar(f"glan {name}", len(items), enabled=settings.progress)
    try:
        with bar.active():
            outcome = run_level(items, folder, settings.shard_size, counted, params=params, progress=bar)
    finally:
        bar.close()
    return LevelRun(read_level(folder, SCHEMAS.get(name)), outcome.as_dict(), sum(calls, Calls()))


def run_subjects(
    disciplines: pl.DataFrame,
    llm: Any,
    folder: str | Path,
    settings: GlanSettings,
    *,
    per_discipline: int = 4,
    queries: int = 2,
) -> LevelRun:
    """Subjects: ``queries`` queries per discipline, merged, the first ``per_discipline`` distinct
    kept (one query of a small model repeats itself; several give a wider list)."""
    params = {"n": per_discipline, "q": queries, "t": settings.temperature, "mt": settings.max_tokens}
    process = partial(
        _subjects_chunk, llm=llm, settings=settings, per_discipline=per_discipline, queries=queries
    )
    return _run("subjects", disciplines.to_dicts(), Path(folder), process, params, llm, settings)


def _subjects_chunk(chunk, llm, settings: GlanSettings, per_discipline: int, queries: int):
    asks = [(d, q) for d in chunk for q in range(queries)]
    repairs = RepairCount()
    res = generate_parsed(
        llm,
        asks,
        lambda dq: settings.prompt("subjects", subjects_prompt(dq[0], per_discipline)),
        repairs.counting(at_least(lambda text, dq: parse_subjects(text, dq[0]), per_discipline, "subjects")),
        settings.sampling("subjects", settings.max_tokens, chunk),
        settings.retries,
    )
    rows, rejects, seen, surplus = [], [], {}, 0
    for (d, q), r in zip(asks, res.results, strict=True):
        if isinstance(r, Reject):
            rejects.append(r.to_dict(level="subjects", discipline=d["discipline"], query=q))
            continue
        kept = seen.setdefault(d["discipline_id"], set())
        for s in r:
            key = normalise_text(s["subject"])
            if key not in kept and len(kept) < per_discipline:
                kept.add(key)
                rows.append(_subject_row(d, s))
            elif key not in kept:
                surplus += 1
    return _rows_table(rows, "subjects"), rejects, Calls.of(res, repairs=repairs, surplus=surplus)


def _subject_row(d: dict[str, Any], s: dict[str, Any]) -> dict[str, Any]:
    return {
        "subject_id": _id(d["discipline_id"], s["subject"]),
        **{k: d[k] for k in _DISCIPLINE_COLS},
        "subject": s["subject"],
        "level": s["level"],
        "subtopics": json.dumps(s["subtopics"]),
    }


def run_syllabi(
    subjects: pl.DataFrame, llm: Any, folder: str | Path, settings: GlanSettings, *, sessions: int = 6
) -> LevelRun:
    """Syllabi: one query per subject, one row per class session with its key concepts."""
    params = {"n": sessions, "t": settings.temperature, "mt": settings.max_tokens}
    process = partial(_syllabi_chunk, llm=llm, settings=settings, sessions=sessions)
    return _run("syllabi", subjects.to_dicts(), Path(folder), process, params, llm, settings)


def _syllabi_chunk(chunk, llm, settings: GlanSettings, sessions: int):
    repairs = RepairCount()
    res = generate_parsed(
        llm,
        list(chunk),
        lambda s: settings.prompt("syllabi", syllabus_prompt(s, sessions)),
        repairs.counting(at_least(lambda text, s: parse_syllabus(text, s, require_concepts=False), sessions, "sessions")),
        settings.sampling("syllabi", settings.max_tokens, chunk),
        settings.retries,
    )
    rejects, concept_calls = _fill_concepts(chunk, res.results, llm, settings, sessions)
    rows, surplus = [], 0
    for s, r in zip(chunk, res.results, strict=True):
        if isinstance(r, Reject):
            rejects.append(r.to_dict(level="syllabi", subject=s["subject"], subject_id=s["subject_id"]))
            continue
        surplus += max(0, len(r) - sessions)
        usable = [sess for sess in r[:sessions] if sess["key_concepts"]]  # the rest: syllabi/concepts rejects
        rows += [_session_row(s, n, sess) for n, sess in enumerate(usable, 1)]
    return _rows_table(rows, "syllabi"), rejects, Calls.of(res, repairs=repairs, surplus=surplus) + concept_calls


def _fill_concepts(
    chunk, results: list[Any], llm, settings: GlanSettings, sessions: int
) -> tuple[list[dict[str, Any]], Calls]:
    """Second syllabus step: a small model keeps to short title lines, so the sessions that came
    back without key concepts get them from one short query each (filled in place)."""
    pairs = [
        (s, sess)
        for s, r in zip(chunk, results, strict=True)
        if not isinstance(r, Reject)
        for sess in r[:sessions]
        if not sess["key_concepts"]
    ]
    if not pairs:
        return [], Calls()
    got = generate_parsed(
        llm,
        pairs,
        concepts_prompt,
        parse_concepts,
        settings.sampling("syllabi", min(settings.max_tokens, 48), pairs),
        settings.retries,
    )
    rejects = []
    for (s, sess), c in zip(pairs, got.results, strict=True):
        if isinstance(c, Reject):
            rejects.append(c.to_dict(level="syllabi/concepts", subject=s["subject"], session=sess["title"]))
        else:
            sess["key_concepts"] = c
    return rejects, Calls.of(got, concept_calls=len(pairs))


def _session_row(s: dict[str, Any], n: int, sess: dict[str, Any]) -> dict[str, Any]:
    return {
        "session_id": _id(s["subject_id"], n),
        **{k: s[k] for k in _SUBJECT_COLS},
        "session": n,
        "title": sess["title"],
        "description": sess["description"],
        "key_concepts": json.dumps(sess["key_concepts"]),
    }


def run_questions(
    syllabi: pl.DataFrame,
    llm: Any,
    folder: str | Path,
    settings: GlanSettings,
    *,
    per_syllabus: int = 4,
    modes: Sequence[str] = ("one", "two"),
) -> LevelRun:
    """Questions: ``per_syllabus`` seeded draws of sessions + key concepts per subject (see
    :func:`question_specs`), one homework question each. Dedup is :func:`dedup_questions`."""
    specs = question_specs(syllabi, per_syllabus, settings.seed, modes)
    params = {"t": settings.temperature, "mt": settings.max_tokens}
    process = partial(_questions_chunk, llm=llm, settings=settings)
    return _run("questions", specs, Path(folder), process, params, llm, settings)


def _questions_chunk(chunk, llm, settings: GlanSettings):
    res = generate_parsed(
        llm,
        list(chunk),
        question_prompt,
        parse_question,
        settings.sampling("questions", min(settings.max_tokens, 160), chunk),
        settings.retries,
    )
    rows, rejects = [], []
    for spec, r in zip(chunk, res.results, strict=True):
        if isinstance(r, Reject):
            rejects.append(
                r.to_dict(level="questions", subject=spec["subject"], key_concepts=spec["key_concepts"])
            )
        else:
            rows.append(_question_row(spec, r))
    return _rows_table(rows, "questions"), rejects, Calls.of(res)


def _question_row(spec: dict[str, Any], question: str) -> dict[str, Any]:
    return {
        "question_id": _id(spec["subject_id"], spec["index"], question),
        **{k: spec[k] for k in _SPEC_COLS},
        "sessions": json.dumps(spec["sessions"]),
        "key_concepts": json.dumps(spec["key_concepts"]),
        "question": question,
    }


def dedup_questions(
    questions: pl.DataFrame, folder: str | Path, shard_size: int, near_threshold: float = 0.8
) -> tuple[pl.DataFrame, dict[str, int]]:
    """Questions kept after exact + near dedup, written to ``folder`` (the dropped ones to its
    ``dropped.jsonl``). Cheap and whole-table, so redone every run: it always matches the questions."""
    kept, dropped, counts = dedup_rows(questions, "question", "question_id", near_threshold)
    write_shards(kept, Path(folder), shard_size)
    atomic_write_jsonl(dropped.to_dicts(), Path(folder) / "dropped.jsonl")
    return kept, counts


def run_examples(questions: pl.DataFrame, llm: Any, folder: str | Path, settings: GlanSettings) -> LevelRun:
    """Answers: one query per question (the question alone, as the example will be trained),
    kept as examples in the core schema with the GLAN path in ``meta``."""
    t = settings.temperature or "paper"
    source = f"glan(model={_model_name(llm)}, seed={settings.seed}, temperature={t})"
    params = {"t": settings.temperature, "mt": settings.max_tokens}
    process = partial(_examples_chunk, llm=llm, settings=settings, source=source)
    return _run("examples", questions.to_dicts(), Path(folder), process, params, llm, settings)


def _examples_chunk(chunk, llm, settings: GlanSettings, source: str):
    res = generate_parsed(
        llm,
        list(chunk),
        answer_prompt,
        parse_answer,
        settings.sampling("examples", settings.max_tokens, chunk),
        settings.retries,
    )
    rows, rejects = [], []
    for q, r in zip(chunk, res.results, strict=True):
        if isinstance(r, Reject):
            rejects.append(r.to_dict(level="answers", question_id=q["question_id"], question=q["question"]))
            continue
        meta = {
            "generator": "glan",
            **{k: q[k] for k in _META_COLS},
            "sessions": json.loads(q["sessions"]),
            "key_concepts": json.loads(q["key_concepts"]),
        }
        rows.append(make_example(q["question"], r, "", source, meta))
    return to_table(rows), rejects, Calls.of(res)


# ---------------------------------------------------------------------------------------------
# The whole chain


def run_glan(
    taxonomy_path: str | Path,
    out_dir: str | Path,
    llm: Any,
    *,
    subjects_per_discipline: int = 4,
    queries_per_discipline: int = 2,
    sessions: int = 6,
    questions_per_syllabus: int = 4,
    session_modes: Sequence[str] = ("one", "two"),
    seed: int = 0,
    shard_size: int = 16,
    max_disciplines: int | None = None,
    max_tokens: int = 256,
    temperature: float | None = None,
    top_p: float = 0.95,
    retries: int = 2,
    near_threshold: float = 0.8,
    progress: bool = True,
) -> dict[str, Any]:
    """Run every GLAN level into ``out_dir``; returns (and writes ``counts.json``) the counts.

    ``taxonomy_path``: a taxonomy file, or an earlier level's table to start from. ``temperature``
    None uses the paper's per-level values. Final examples: ``out_dir/examples`` shards.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = GlanSettings(
        seed=seed,
        shard_size=shard_size,
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        retries=retries,
        progress=progress,
        # Test doubles may not declare it; every backend in pipelines.llm does.
        structured=bool(getattr(llm, "structured_output", False)),
    )
    start, table = _load_start(Path(taxonomy_path))
    if start == "disciplines":
        table = table if max_disciplines is None else table.head(max_disciplines)
        write_shards(table, out / "disciplines", shard_size=max(1, table.height))
    disciplines = table.height if start == "disciplines" else 0
    todo = LEVELS[LEVELS.index(start) + 1 :]
    runs: dict[str, LevelRun] = {}
    parents: dict[str, pl.DataFrame] = {}  # each level's input, to check its counts against what was asked
    if "subjects" in todo:
        parents["subjects"] = table
        runs["subjects"] = run_subjects(
            table,
            llm,
            out / "subjects",
            settings,
            per_discipline=subjects_per_discipline,
            queries=queries_per_discipline,
        )
        table = runs["subjects"].table
    if "syllabi" in todo:
        parents["syllabi"] = table
        runs["syllabi"] = run_syllabi(table, llm, out / "syllabi", settings, sessions=sessions)
        table = runs["syllabi"].table
    if "questions" in todo:
        parents["questions"] = table
        runs["questions"] = run_questions(
            table, llm, out / "questions", settings, per_syllabus=questions_per_syllabus, modes=session_modes
        )
        table = runs["questions"].table
    kept, dedup = dedup_questions(table, out / "questions_unique", shard_size, near_threshold)
    runs["examples"] = run_examples(kept, llm, out / "examples", settings)
    counts = _counts(out, start, disciplines, runs, dedup, settings.structured)
    asked = {"subjects": subjects_per_discipline, "syllabi": sessions, "questions": questions_per_syllabus}
    counts["shortfalls"] = shortfalls(parents, runs, asked)
    counts["notes"] = glan_notes(counts)
    atomic_write_text(out / "counts.json", json.dumps(counts, indent=2, sort_keys=True))
    return counts


def _counts(
    out: Path, start: str, disciplines: int, runs: dict[str, LevelRun], dedup: dict[str, int],
    structured: bool = False,
) -> dict[str, Any]:
    """The levels' counts merged: per-level outcomes and rows, LLM calls summed, rejects on disk."""
    calls = sum((r.calls for r in runs.values()), Calls())
    rejects = [r for name in ("subjects", "syllabi", "questions", "examples") for r in level_rejects(out / name)]
    return {
        "levels": {name: r.outcome for name, r in runs.items()},
        "generated": calls.generated,
        "retried": calls.retried,
        "start_level": start,
        "disciplines": disciplines,
        **({"concept_calls": calls.concept_calls} if calls.concept_calls else {}),
        # How often the JSON levels' answers needed repair, and whether decoding was constrained.
        "json_repair": {"answers": calls.json_answers, "repaired": calls.repaired, "constrained": structured},
        "dedup": dedup,
        **{name: r.table.height for name, r in runs.items()},
        "rejects": len(rejects),
        "reject_reasons": dict(Counter(f"{r.get('level', '?')}: {r.get('reason', '')}" for r in rejects).most_common()),
        "deduplicated": dedup["exact"] + dedup["near"],
        "surplus_cut": calls.surplus,
    }


def glan_notes(counts: dict[str, Any]) -> list[str]:
    """What the levels cut or left out, as sentences with counts (stage record and run report)."""
    notes = []
    for what, s in counts.get("shortfalls", {}).items():
        if s["short"]:
            notes.append(f"{s['short']} of {s['inputs']} inputs got fewer {what.replace('_', ' ')} than the "
                         f"{s['asked']} asked (the answers that fell short are in the level's rejects)")
    if counts.get("surplus_cut"):
        notes.append(f"{counts['surplus_cut']} subjects or sessions beyond the number asked were left out")
    if counts.get("rejects"):
        reasons = "; ".join(f"{k}: {v}" for k, v in counts.get("reject_reasons", {}).items())
        notes.append(f"{counts['rejects']} model answers rejected after retries ({reasons})")
    if counts.get("deduplicated"):
        notes.append(f"{counts['deduplicated']} duplicate questions removed (questions_unique/dropped.jsonl)")
    return notes


_PER = {"subjects": ("discipline_id", "subjects per discipline"), "syllabi": ("subject_id", "sessions per syllabus"),
        "questions": ("subject_id", "questions per syllabus")}


def shortfalls(
    parents: dict[str, pl.DataFrame], runs: dict[str, LevelRun], asked: dict[str, int]
) -> dict[str, dict[str, Any]]:
    """Per level run: how many of its inputs (disciplines, subjects) came out with fewer rows than
    asked. The rows that are missing are in that level's rejects (answers short of the count,
    sessions whose concepts never came); this says how many parents it left short."""
    out = {}
    for level, parent in parents.items():
        key, what = _PER[level]
        table = runs[level].table
        got = table.group_by(key).len() if table.height else pl.DataFrame(schema={key: pl.Utf8, "len": pl.UInt32})
        per_parent = parent.select(key).unique().join(got, on=key, how="left")["len"].fill_null(0)
        out[what.replace(" ", "_")] = {
            "asked": asked[level], "inputs": per_parent.len(), "short": int((per_parent < asked[level]).sum())
        }
    return out


def main(argv: list[str] | None = None) -> None:
    import argparse

    from pipelines.llm import make_backend

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("taxonomy", help="taxonomy file (.yaml/.json/.txt) or an earlier level's table")
    ap.add_argument("out_dir", help="run folder (levels are written here; rerun to resume)")
    ap.add_argument("--backend", default="hf", help="hf, llamacpp, openai, vllm or auto")
    ap.add_argument("--model", default="embedded", help="embedded, tiny or a local model folder")
    ap.add_argument("--max-disciplines", type=int, default=None, help="use only the first N disciplines")
    ap.add_argument("--subjects", type=int, default=4, help="subjects kept per discipline")
    ap.add_argument("--queries", type=int, default=2, help="subject queries per discipline")
    ap.add_argument("--sessions", type=int, default=6, help="class sessions per syllabus")
    ap.add_argument("--questions", type=int, default=4, help="questions per syllabus")
    ap.add_argument("--max-tokens", type=int, default=256, help="token cap per answer")
    ap.add_argument(
        "--temperature", type=float, default=None, help="one temperature for all levels (default: paper's)"
    )
    ap.add_argument("--shard-size", type=int, default=16, help="items per shard (unit of resume)")
    ap.add_argument("--seed", type=int, default=0, help="seed for concept sampling and generation")
    args = ap.parse_args(argv)
    llm = make_backend(args.backend, model=args.model)
    counts = run_glan(
        args.taxonomy,
        args.out_dir,
        llm,
        subjects_per_discipline=args.subjects,
        queries_per_discipline=args.queries,
        sessions=args.sessions,
        questions_per_syllabus=args.questions,
        seed=args.seed,
        shard_size=args.shard_size,
        max_disciplines=args.max_disciplines,
        max_tokens=args.max_tokens,
        temperature=args.temperature,
    )
    print(json.dumps(counts, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
