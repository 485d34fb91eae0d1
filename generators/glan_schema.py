"""GLAN's tables: the level names, each level's column schema, row ids, and the level a run starts from.

    from generators.glan_schema import SCHEMAS, load_start
    level, table = load_start(Path("data/taxonomy.yaml"))   # ("disciplines", one row per discipline)

A run starts from a taxonomy file (-> the disciplines table) or from an earlier level's table (a
folder of shards, ``.parquet`` or ``.jsonl``), recognised by its columns (:func:`load_start`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from generators.levels import fingerprint, read_level
from generators.taxonomy import load_taxonomy

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


def row_id(*parts: Any) -> str:
    """A stable id from the parts that make a row what it is (its parent's id and its own name)."""
    return fingerprint(list(parts))


def rows_table(rows: list[dict[str, Any]], level: str) -> pl.DataFrame:
    """``rows`` as the level's table; an empty list still has the level's columns."""
    return pl.DataFrame(rows, schema=SCHEMAS[level]) if rows else pl.DataFrame(schema=SCHEMAS[level])


def load_start(path: Path) -> tuple[str, pl.DataFrame]:
    """A taxonomy file -> disciplines table; or an earlier level's table (folder of shards,
    .parquet, .jsonl) -> (that level, its table), recognised by its columns."""
    path = Path(path)
    if not (path.is_dir() or path.suffix in (".parquet", ".jsonl")):
        rows = [
            {
                "discipline_id": row_id(d.field, d.subfield, d.name),
                "field": d.field,
                "subfield": d.subfield,
                "discipline": d.name,
                "description": d.description,
            }
            for d in load_taxonomy(path)
        ]
        return "disciplines", rows_table(rows, "disciplines")
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
