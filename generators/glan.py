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

Edit a level's rows (or pass an edited table, e.g. ``run/subjects`` or a ``.jsonl``, in place
of the taxonomy) and run again: only the shards whose input changed are regenerated, and a
killed run resumes where it stopped (see ``levels.py``). Rejected answers go to each folder's
``rejects-*.jsonl`` with the reason; ``counts.json`` has the counts per level.

Key concepts (as in the paper, both modes): ``one`` = one session, 1..min(5, m) of its m
concepts; ``two`` = two sessions, 2..min(5, m1+m2) concepts from the union of theirs.
Prompts are few-shot with a simple line format, which a 135M model follows far more often than
nested JSON; the parsers still accept JSON answers from bigger models.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from generators.dedup import dedup_rows
from generators.levels import (
    derive_seed,
    fingerprint,
    level_rejects,
    read_level,
    run_level,
    write_table_shards,
)
from generators.parsing import (
    Reject,
    clean_line,
    extract_json,
    generate_parsed,
    is_degenerate,
    is_refusal,
    list_items,
    split_concepts,
    trim_unfinished,
)
from generators.taxonomy import load_taxonomy
from pipelines.llm.base import Messages, Sampling
from pipelines.schema import make_example, normalise_text, to_table
from pipelines.shards import atomic_write_jsonl, atomic_write_text

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
# Prompts (few-shot: one worked example as a previous turn, then the real request)

SUBJECTS_ASK = "List {n} subjects taught in {discipline}{about}. One per line: name | level | subtopics"
SUBJECTS_EXAMPLE = (
    SUBJECTS_ASK.format(n=3, discipline="Chemistry", about=""),
    "General Chemistry | introductory | atoms, chemical bonds, reactions\n"
    "Organic Chemistry | intermediate | carbon compounds, functional groups, synthesis\n"
    "Quantum Chemistry | advanced | wave functions, molecular orbitals, spectroscopy",
)
# The syllabus is asked in two steps: session titles (short lines, which a small model keeps to),
# then key concepts per session, only for sessions that came back without them (a big model that
# writes "title - description | concepts" lines in one go needs no second call).
SYLLABUS_ASK = (
    "Write {n} class sessions for the {level} course {subject} ({discipline}{subtopics}). "
    "One per line: Session number: title - short description"
)
SYLLABUS_EXAMPLE = (
    SYLLABUS_ASK.format(
        n=3,
        level="introductory",
        subject="General Chemistry",
        discipline="Chemistry",
        subtopics="; atoms, chemical bonds, reactions",
    ),
    "Session 1: Atoms - what matter is made of\n"
    "Session 2: Chemical bonds - how atoms hold together\n"
    "Session 3: Reactions - how substances change",
)
CONCEPTS_ASK = 'List three key concepts taught in the session "{title}" of the course {subject}.'
CONCEPTS_EXAMPLE = (
    CONCEPTS_ASK.format(title="Chemical bonds", subject="General Chemistry"),
    "ionic bonds, covalent bonds, electronegativity",
)
QUESTION_ASK = "Write a homework question for the {level} course {subject} about: {concepts}."
QUESTION_EXAMPLE = (
    QUESTION_ASK.format(
        level="introductory", subject="General Chemistry", concepts="covalent bonds, electronegativity"
    ),
    "Explain why the bond between hydrogen and chlorine is polar, using the electronegativity of each atom.",
)


# Part of every level's fingerprint: editing a prompt regenerates what it made.
PROMPTS_FINGERPRINT = fingerprint(
    [
        SUBJECTS_ASK,
        SUBJECTS_EXAMPLE,
        SYLLABUS_ASK,
        SYLLABUS_EXAMPLE,
        CONCEPTS_ASK,
        CONCEPTS_EXAMPLE,
        QUESTION_ASK,
        QUESTION_EXAMPLE,
    ]
)


def _few_shot(example: tuple[str, str], ask: str) -> Messages:
    return [
        {"role": "user", "content": example[0]},
        {"role": "assistant", "content": example[1]},
        {"role": "user", "content": ask},
    ]


def subjects_prompt(d: dict[str, Any], n: int) -> Messages:
    about = f" ({d['description']})" if d.get("description") else ""
    return _few_shot(SUBJECTS_EXAMPLE, SUBJECTS_ASK.format(n=n, discipline=d["discipline"], about=about))


def syllabus_prompt(s: dict[str, Any], n: int) -> Messages:
    subtopics = json.loads(s["subtopics"] or "[]")
    extra = f"; {', '.join(subtopics)}" if subtopics else ""
    return _few_shot(
        SYLLABUS_EXAMPLE,
        SYLLABUS_ASK.format(
            n=n, level=s["level"], subject=s["subject"], discipline=s["discipline"], subtopics=extra
        ),
    )


def concepts_prompt(pair: tuple[dict[str, Any], dict[str, Any]]) -> Messages:
    subject, session = pair
    return _few_shot(
        CONCEPTS_EXAMPLE, CONCEPTS_ASK.format(title=session["title"], subject=subject["subject"])
    )


def question_prompt(spec: dict[str, Any]) -> Messages:
    ask = QUESTION_ASK.format(
        level=spec["level"], subject=spec["subject"], concepts=", ".join(spec["key_concepts"])
    )
    return _few_shot(QUESTION_EXAMPLE, ask)


def answer_prompt(q: dict[str, Any]) -> Messages:
    # The answer is asked exactly as the example will be trained: the question alone.
    return [{"role": "user", "content": q["question"]}]


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
# Levels


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


class _Bar:
    """A tqdm bar per level (no bar when progress is off)."""

    def __init__(self, enabled: bool, desc: str, total: int):
        self.bar = None
        if enabled and total:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="item", leave=False)

    def __call__(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


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
    model = getattr(llm, "model_id", getattr(llm, "name", type(llm).__name__))
    counts: dict[str, Any] = {"levels": {}, "generated": 0, "retried": 0}
    start, table = _load_start(Path(taxonomy_path))
    if start == "disciplines" and max_disciplines is not None:
        table = table.head(max_disciplines)
    if start == "disciplines":
        write_table_shards(table, out / "disciplines", shard_size=max(1, table.height))
    counts["start_level"] = start
    counts["disciplines"] = table.height if start == "disciplines" else 0

    def sampling(level: str, tokens: int, chunk: Sequence[Any]) -> Sampling:
        t = PAPER_TEMPERATURE[level] if temperature is None else temperature
        return Sampling(
            temperature=t, top_p=top_p, max_tokens=tokens, seed=derive_seed(seed, level, list(chunk))
        )

    def level(name: str, items: list[Any], process: Callable, params: dict[str, Any]):
        bar = _Bar(progress, name, len(items))  # items done, updated shard by shard
        try:
            outcome = run_level(
                items,
                out / name,
                shard_size,
                process,
                params={**params, "model": model, "seed": seed, "prompts": PROMPTS_FINGERPRINT},
                progress=bar,
            )
        finally:
            bar.close()
        counts["levels"][name] = outcome.as_dict()
        return read_level(out / name, SCHEMAS.get(name))

    def bump(attempts) -> None:
        counts["generated"] += attempts.generated
        counts["retried"] += attempts.retried

    # -- subjects: several queries per discipline, merged, the first N distinct kept
    if start == "disciplines":

        def make_subjects(chunk):
            queries = [(d, q) for d in chunk for q in range(queries_per_discipline)]
            res = generate_parsed(
                llm,
                queries,
                lambda dq: subjects_prompt(dq[0], subjects_per_discipline),
                lambda text, dq: parse_subjects(text, dq[0]),
                sampling("subjects", max_tokens, chunk),
                retries,
            )
            bump(res)
            rows, rejects, per = [], [], {}
            for (d, q), r in zip(queries, res.results, strict=True):
                if isinstance(r, Reject):
                    rejects.append(r.to_dict(level="subjects", discipline=d["discipline"], query=q))
                    continue
                for s in r:
                    kept = per.setdefault(d["discipline_id"], {})
                    key = normalise_text(s["subject"])
                    if key not in kept and len(kept) < subjects_per_discipline:
                        kept[key] = True
                        rows.append(
                            {
                                "subject_id": _id(d["discipline_id"], s["subject"]),
                                **{k: d[k] for k in ("discipline_id", "field", "subfield", "discipline")},
                                "subject": s["subject"],
                                "level": s["level"],
                                "subtopics": json.dumps(s["subtopics"]),
                            }
                        )
            return _rows_table(rows, "subjects"), rejects

        table = level(
            "subjects",
            table.to_dicts(),
            make_subjects,
            {"n": subjects_per_discipline, "q": queries_per_discipline, "t": temperature, "mt": max_tokens},
        )
        start = "subjects"

    # -- syllabus: one query per subject, one row per class session
    if start == "subjects":

        def make_syllabi(chunk):
            res = generate_parsed(
                llm,
                list(chunk),
                lambda s: syllabus_prompt(s, sessions),
                lambda text, s: parse_syllabus(text, s, require_concepts=False),
                sampling("syllabi", max_tokens, chunk),
                retries,
            )
            bump(res)
            rows, rejects = [], []
            # Second step: key concepts for the sessions written without them.
            pairs = [
                (s, sess)
                for s, r in zip(chunk, res.results, strict=True)
                if not isinstance(r, Reject)
                for sess in r[:sessions]
                if not sess["key_concepts"]
            ]
            if pairs:
                got = generate_parsed(
                    llm,
                    pairs,
                    concepts_prompt,
                    parse_concepts,
                    sampling("syllabi", min(max_tokens, 48), pairs),
                    retries,
                )
                bump(got)
                counts["concept_calls"] = counts.get("concept_calls", 0) + len(pairs)
                for (s, sess), c in zip(pairs, got.results, strict=True):
                    if isinstance(c, Reject):
                        rejects.append(
                            c.to_dict(level="syllabi/concepts", subject=s["subject"], session=sess["title"])
                        )
                    else:
                        sess["key_concepts"] = c
            for s, r in zip(chunk, res.results, strict=True):
                if isinstance(r, Reject):
                    rejects.append(
                        r.to_dict(level="syllabi", subject=s["subject"], subject_id=s["subject_id"])
                    )
                    continue
                r = [sess for sess in r[:sessions] if sess["key_concepts"]]
                for n, sess in enumerate(r, 1):
                    rows.append(
                        {
                            "session_id": _id(s["subject_id"], n),
                            **{
                                k: s[k]
                                for k in (
                                    "subject_id",
                                    "discipline_id",
                                    "field",
                                    "subfield",
                                    "discipline",
                                    "subject",
                                    "level",
                                )
                            },
                            "session": n,
                            "title": sess["title"],
                            "description": sess["description"],
                            "key_concepts": json.dumps(sess["key_concepts"]),
                        }
                    )
            return _rows_table(rows, "syllabi"), rejects

        table = level(
            "syllabi", table.to_dicts(), make_syllabi, {"n": sessions, "t": temperature, "mt": max_tokens}
        )
        start = "syllabi"

    # -- questions: sampled sessions + key concepts -> one homework question each
    if start == "syllabi":
        specs = question_specs(table, questions_per_syllabus, seed, session_modes)

        def make_questions(chunk):
            res = generate_parsed(
                llm,
                list(chunk),
                question_prompt,
                parse_question,
                sampling("questions", min(max_tokens, 160), chunk),
                retries,
            )
            bump(res)
            rows, rejects = [], []
            for spec, r in zip(chunk, res.results, strict=True):
                if isinstance(r, Reject):
                    rejects.append(
                        r.to_dict(
                            level="questions", subject=spec["subject"], key_concepts=spec["key_concepts"]
                        )
                    )
                    continue
                rows.append(
                    {
                        "question_id": _id(spec["subject_id"], spec["index"], r),
                        **{
                            k: spec[k]
                            for k in (
                                "subject_id",
                                "field",
                                "subfield",
                                "discipline",
                                "subject",
                                "level",
                                "mode",
                            )
                        },
                        "sessions": json.dumps(spec["sessions"]),
                        "key_concepts": json.dumps(spec["key_concepts"]),
                        "question": r,
                    }
                )
            return _rows_table(rows, "questions"), rejects

        table = level("questions", specs, make_questions, {"t": temperature, "mt": max_tokens})
        start = "questions"

    # -- dedup (cheap, whole table, redone every run so it always matches the questions)
    kept, dropped, dedup_counts = dedup_rows(table, "question", "question_id", near_threshold)
    write_table_shards(kept, out / "questions_unique", shard_size)
    atomic_write_jsonl(dropped.to_dicts(), out / "questions_unique" / "dropped.jsonl")
    counts["dedup"] = dedup_counts

    # -- answers -> examples in the core schema
    source = f"glan(model={model}, seed={seed}, temperature={temperature or 'paper'})"

    def make_examples(chunk):
        res = generate_parsed(
            llm, list(chunk), answer_prompt, parse_answer, sampling("examples", max_tokens, chunk), retries
        )
        bump(res)
        rows, rejects = [], []
        for q, r in zip(chunk, res.results, strict=True):
            if isinstance(r, Reject):
                rejects.append(
                    r.to_dict(level="answers", question_id=q["question_id"], question=q["question"])
                )
                continue
            meta = {
                "generator": "glan",
                **{
                    k: q[k]
                    for k in ("field", "subfield", "discipline", "subject", "level", "mode", "question_id")
                },
                "sessions": json.loads(q["sessions"]),
                "key_concepts": json.loads(q["key_concepts"]),
            }
            rows.append(make_example(q["question"], r, "", source, meta))
        return to_table(rows), rejects

    examples = level("examples", kept.to_dicts(), make_examples, {"t": temperature, "mt": max_tokens})
    for name in ("subjects", "syllabi", "questions"):
        if name in counts["levels"]:
            counts[name] = read_level(out / name, SCHEMAS[name]).height
    counts["examples"] = examples.height
    counts["rejects"] = sum(
        len(level_rejects(out / name)) for name in ("subjects", "syllabi", "questions", "examples")
    )
    counts["deduplicated"] = dedup_counts["exact"] + dedup_counts["near"]
    atomic_write_text(out / "counts.json", json.dumps(counts, indent=2, sort_keys=True))
    return counts


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
