"""GLAN's key-concept sampling: which sessions and key concepts each homework question is about.

    specs = question_specs(syllabi, per_syllabus=4, seed=0)   # one dict per question to ask

Both modes of the paper (arXiv 2402.13064): ``one`` = one session, 1..min(5, m) of its m
concepts; ``two`` = two sessions, 2..min(5, m1+m2) concepts from the union of theirs. Seeded per
subject and question index (:func:`generators.levels.derive_seed`), so a rerun draws the same.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from typing import Any

import polars as pl

from generators.levels import derive_seed


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
