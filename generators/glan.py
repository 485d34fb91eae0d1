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

Each level is also a function of its own in ``glan_levels.py`` (``run_subjects``, ``run_syllabi``,
``run_questions``, ``dedup_questions``, ``run_examples``): input table, llm, that level's folder and
:class:`GlanSettings` in, :class:`LevelRun` (table + counts) out; ``run_glan`` chains them:

    syllabi = run_syllabi(subjects, llm, Path("runs/glan/syllabi"), GlanSettings(seed=1)).table

Edit a level's rows (or pass an edited table, e.g. ``run/subjects`` or a ``.jsonl``, in place
of the taxonomy) and run again: only the shards whose input changed are regenerated, and a
killed run resumes where it stopped (see ``levels.py``). Rejected answers go to each folder's
``rejects-*.jsonl`` with the reason; ``counts.json`` has the counts per level.

Counts are checked against what was asked (``glan_level_run.at_least``): a subjects answer with fewer than
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

The pieces, one module each: ``glan_schema.py`` (level tables, ids, where a run starts),
``glan_prompts.py``, ``glan_parse.py`` (answers -> rows or rejects), ``glan_sampling.py``
(key-concept sampling), ``glan_level_run.py`` (settings, call counts, the shared level runner),
``glan_levels.py`` (one function per level). This file chains them, counts and explains what
each level cut (``counts.json``), and is the command line.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from generators.glan_level_run import Calls, GlanSettings, LevelRun
from generators.glan_levels import dedup_questions, run_examples, run_questions, run_subjects, run_syllabi
from generators.glan_schema import LEVELS, load_start
from generators.levels import level_rejects
from pipelines.shards import atomic_write_text, write_shards

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
    map_shards: Callable[[str, Path, list[int]], None] | None = None,
) -> dict[str, Any]:
    """Run every GLAN level into ``out_dir``; returns (and writes ``counts.json``) the counts.

    ``taxonomy_path``: a taxonomy file, or an earlier level's table to start from. ``temperature``
    None uses the paper's per-level values. Final examples: ``out_dir/examples`` shards.
    ``map_shards(level, folder, shard indexes)``: makes a level's missing shards elsewhere (each with
    ``glan_levels.glan_level_shard``; the flow maps them over its task runner); default: here.
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
        map_shards=map_shards,
        # Test doubles may not declare it; every backend in pipelines.llm does.
        structured=bool(getattr(llm, "structured_output", False)),
    )
    start, table = load_start(Path(taxonomy_path))
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
