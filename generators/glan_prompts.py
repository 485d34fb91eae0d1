"""GLAN's prompts: the texts and the builders that turn a row into chat messages.

    from generators.glan_prompts import syllabus_prompt
    messages = syllabus_prompt(subject_row, n=6)

Kept apart from the GLAN levels (``glan_levels.py``) so the wording can be read and edited in
one place. Every text here is part of :data:`PROMPTS_FINGERPRINT`, which is in each level's fingerprint: editing a prompt
regenerates the levels it made (see ``levels.py``).
"""

from __future__ import annotations

import json
from typing import Any

from generators.levels import fingerprint
from pipelines.llm.base import Messages

# Few-shot: one worked example as a previous turn, then the real request.
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


_STRINGS = {"type": "array", "items": {"type": "string"}}
# What the JSON levels ask a backend with constrained decoding for (LLM.structured_output); the
# parsers (glan_parse.parse_subjects / parse_syllabus) read these shapes as well as the line formats.
LEVEL_SCHEMAS: dict[str, dict[str, Any]] = {
    "subjects": {
        "title": "subjects", "type": "object", "additionalProperties": False, "required": ["subjects"],
        "properties": {"subjects": {"type": "array", "items": {
            "type": "object", "additionalProperties": False, "required": ["name", "level", "subtopics"],
            "properties": {"name": {"type": "string"},
                           "level": {"type": "string", "enum": ["introductory", "intermediate", "advanced"]},
                           "subtopics": _STRINGS}}}},
    },
    "syllabi": {
        "title": "syllabus", "type": "object", "additionalProperties": False, "required": ["sessions"],
        "properties": {"sessions": {"type": "array", "items": {
            "type": "object", "additionalProperties": False, "required": ["title", "description", "key_concepts"],
            "properties": {"title": {"type": "string"}, "description": {"type": "string"},
                           "key_concepts": _STRINGS}}}},
    },
}
JSON_ASK = "Reply with JSON only, matching this schema: {schema}"


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
        JSON_ASK,
        LEVEL_SCHEMAS,
    ]
)


def ask_for_json(messages: Messages, schema: dict[str, Any]) -> Messages:
    """``messages`` with the last user turn asking for ``schema`` (decoding is constrained to it;
    saying so keeps the model's content sensible inside the forced shape)."""
    *head, last = messages
    ask = JSON_ASK.format(schema=json.dumps(schema, separators=(",", ":")))
    return [*head, {**last, "content": f"{last['content']}\n\n{ask}"}]


def _few_shot(example: tuple[str, str], ask: str) -> Messages:
    """The worked example as an earlier turn: a small model copies its line format."""
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
