"""GLAN's LLM levels, one function each: (input table, llm, that level's folder, settings) -> LevelRun.

    syllabi = run_syllabi(subjects, llm, Path("runs/glan/syllabi"), GlanSettings(seed=1)).table

| function          | one row per                                      | LLM queries                  |
|-------------------|--------------------------------------------------|------------------------------|
| run_subjects      | subject (name, level, subtopics)                 | ``queries`` per discipline   |
| run_syllabi       | class session (title, description, key_concepts) | one per subject (+ concepts) |
| run_questions     | homework question                                | one per sampled spec         |
| dedup_questions   | question kept after exact + near dedup           | none                         |
| run_examples      | example (core schema)                            | one answer per question      |

``glan_level_shard(folder, index, llm)`` makes one shard of a planned level in any process (the
flow maps it over its task runner through ``GlanSettings.map_shards``).

Each level prompts (``glan_prompts.py``), parses (``glan_parse.py``) and keeps its rejects; the
shared runner, settings and call counts are in ``glan_level_run.py``; ``glan.py`` chains them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl

from generators.dedup import dedup_rows
from generators.glan_level_run import (
    Calls,
    GlanSettings,
    LevelRun,
    RepairCount,
    at_least,
    model_name,
    run_glan_level,
    run_glan_shard,
)
from generators.glan_parse import parse_answer, parse_concepts, parse_question, parse_subjects, parse_syllabus
from generators.glan_prompts import (
    answer_prompt,
    concepts_prompt,
    question_prompt,
    subjects_prompt,
    syllabus_prompt,
)
from generators.glan_sampling import question_specs
from generators.glan_schema import row_id, rows_table
from generators.parsing import Reject, generate_parsed
from pipelines.schema import make_example, normalise_text, to_table
from pipelines.shards import atomic_write_jsonl, write_shards

_DISCIPLINE_COLS = ("discipline_id", "field", "subfield", "discipline")
_SUBJECT_COLS = ("subject_id", *_DISCIPLINE_COLS, "subject", "level")
_SPEC_COLS = ("subject_id", "field", "subfield", "discipline", "subject", "level", "mode")
_META_COLS = ("field", "subfield", "discipline", "subject", "level", "mode", "question_id")


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
    kwargs = {"per_discipline": per_discipline, "queries": queries}
    return run_glan_level("subjects", disciplines.to_dicts(), Path(folder), kwargs, params, llm, settings,
                          glan_level_shard)


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
    return rows_table(rows, "subjects"), rejects, Calls.of(res, repairs=repairs, surplus=surplus)


def _subject_row(d: dict[str, Any], s: dict[str, Any]) -> dict[str, Any]:
    return {
        "subject_id": row_id(d["discipline_id"], s["subject"]),
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
    return run_glan_level("syllabi", subjects.to_dicts(), Path(folder), {"sessions": sessions}, params, llm,
                          settings, glan_level_shard)


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
    return rows_table(rows, "syllabi"), rejects, Calls.of(res, repairs=repairs, surplus=surplus) + concept_calls


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
        "session_id": row_id(s["subject_id"], n),
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
    return run_glan_level("questions", specs, Path(folder), {}, params, llm, settings, glan_level_shard)


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
    return rows_table(rows, "questions"), rejects, Calls.of(res)


def _question_row(spec: dict[str, Any], question: str) -> dict[str, Any]:
    return {
        "question_id": row_id(spec["subject_id"], spec["index"], question),
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
    source = f"glan(model={model_name(llm)}, seed={settings.seed}, temperature={t})"
    params = {"t": settings.temperature, "mt": settings.max_tokens}
    return run_glan_level("examples", questions.to_dicts(), Path(folder), {"source": source}, params, llm,
                          settings, glan_level_shard)


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


CHUNKS = {"subjects": _subjects_chunk, "syllabi": _syllabi_chunk, "questions": _questions_chunk,
          "examples": _examples_chunk}


def glan_level_shard(folder: str | Path, index: int, llm: Any) -> int:
    """Make shard ``index`` of the GLAN level planned in ``folder`` (any process: it reads the plan
    and its items from the folder); its rows. See glan_level_run.run_glan_shard."""
    return run_glan_shard(folder, index, llm, CHUNKS)
