"""GLAN generator: question specs, dedup, every level end to end with a fake LLM, resume and edits.

The parsers are tested in test_glan_parse.py, key-concept sampling in test_glan_sampling.py."""

from __future__ import annotations

import json
from collections import Counter

import polars as pl
import pytest

from generators.dedup import dedup_rows
from generators.glan import run_glan
from generators.glan_level_run import GlanSettings
from generators.glan_levels import dedup_questions, run_examples, run_questions, run_syllabi
from generators.glan_sampling import question_specs
from pipelines.shards import read_shards

# ---- question specs (key-concept sampling per subject) ----------------------------------------


def _syllabi_table():
    rows = []
    for subj in ("A", "B"):
        for n in range(1, 5):
            rows.append(
                {
                    "session_id": f"{subj}{n}",
                    "subject_id": subj,
                    "discipline_id": "d",
                    "field": "f",
                    "subfield": "sf",
                    "discipline": "D",
                    "subject": subj,
                    "level": "introductory",
                    "session": n,
                    "title": f"{subj} session {n}",
                    "description": "",
                    "key_concepts": json.dumps([f"{subj}{n}-{j}" for j in range(n + 1)]),
                }
            )
    return pl.DataFrame(rows)


def test_question_specs_are_seeded_and_use_both_modes():
    t = _syllabi_table()
    a, b, c = question_specs(t, 20, seed=1), question_specs(t, 20, seed=1), question_specs(t, 20, seed=2)
    assert a == b and a != c
    assert len(a) == 40 and {s["mode"] for s in a} == {"one", "two"}
    assert all(len(s["sessions"]) == (2 if s["mode"] == "two" else 1) for s in a)
    assert {s["mode"] for s in question_specs(t, 10, seed=1, modes=("one",))} == {"one"}


# ---- dedup ----------------------------------------------------------------------------------


def test_dedup_counts_exact_and_near():
    base = "Explain how the mass of a star determines the length of its life on the main sequence"
    qs = [
        base,
        base.upper() + "  ",
        base + " today",
        "What is a neutron star and how does it form after a supernova?",
    ]
    t = pl.DataFrame({"question_id": ["a", "b", "c", "d"], "question": qs})
    kept, dropped, counts = dedup_rows(t, "question", "question_id", near_threshold=0.7)
    assert counts == {"input": 4, "exact": 1, "near": 1, "kept": 2}
    assert kept["question_id"].to_list() == ["a", "d"]
    assert dropped["dup_of"].to_list() == ["a", "a"] and dropped["dup_kind"].to_list() == ["exact", "near"]


# ---- end to end with a fake LLM -------------------------------------------------------------


def _kind(text: str) -> str:
    """What a GLAN prompt asks for."""
    if "key concepts taught" in text:
        return "concepts"
    if text.startswith("List"):
        return "subjects"
    if "class sessions" in text:
        return "syllabi"
    return "questions" if text.startswith("Write a homework question") else "answers"


def _glan(subject_names=("Mechanics", "Waves"), titles_only=False):
    """Canned GLAN answers chosen by what the prompt asks for (count them with :func:`_prompts`)."""

    def answer(ask):
        ask, kind = ask.text, _kind(ask.text)
        if kind == "concepts":
            title = ask.split('"')[1]
            return f"{title} idea, concept {title[-1]}, topic {title[-1]}"
        if kind == "subjects":
            return "\n".join(f"{n} | introductory | a, b" for n in subject_names)
        if kind == "syllabi":
            course = ask.split("course ")[1].split(" (")[0]
            if titles_only:  # as a small model writes them: the concepts come in a second call
                return "\n".join(f"Session {i}: {course} part {i} - about it" for i in range(1, 4))
            return "\n".join(
                f"Session {i}: {course} part {i} | {course} idea {i}, concept {i}, topic {i}" for i in range(1, 4)
            )
        if kind == "questions":
            return (
                f"Question: Using {ask.split('about: ')[1].rstrip('.')}, explain the {ask.split('course ')[1].split(' about')[0]} case."
            )
        return "I don't know." if "concept 3" in ask else f"A worked answer to: {ask[:40]}"

    return answer


NO_PROMPTS = {"subjects": 0, "syllabi": 0, "concepts": 0, "questions": 0, "answers": 0}


def _prompts(llm) -> dict[str, int]:
    """How many prompts of each kind ``llm`` was asked."""
    return {**NO_PROMPTS, **Counter(_kind(a.text) for a in llm.asks)}


def _run(tmp_path, llm, **kw):
    args = dict(
        max_disciplines=2,
        subjects_per_discipline=2,
        queries_per_discipline=2,
        sessions=3,
        questions_per_syllabus=3,
        shard_size=2,
        progress=False,
    )
    args.update(kw)
    return run_glan(kw.pop("taxonomy", "data/taxonomy.yaml"), tmp_path / "run", llm, **args)


def test_run_glan_writes_every_level_and_counts(tmp_path, fake_llm):
    llm = fake_llm(_glan())
    counts = _run(tmp_path, llm)
    run = tmp_path / "run"
    assert counts["disciplines"] == 2 and counts["subjects"] == 4 and counts["syllabi"] == 12
    assert _prompts(llm)["subjects"] == 4  # 2 disciplines x 2 queries
    assert counts["questions"] == 12
    assert counts["dedup"]["input"] == 12 and counts["dedup"]["kept"] + counts["deduplicated"] == 12
    answers_refused = len(
        [r for r in read_shards(run / "questions_unique").to_dicts() if "concept 3" in r["question"]]
    )
    assert counts["examples"] == counts["dedup"]["kept"] - answers_refused
    assert counts["rejects"] == answers_refused and answers_refused > 0
    rej = [
        json.loads(x) for p in (run / "examples").glob("rejects-*.jsonl") for x in p.read_text().splitlines()
    ]
    assert {r["reason"] for r in rej} == {"refusal"} and all(r["attempts"] == 3 for r in rej)
    ex = read_shards(run / "examples")
    meta = json.loads(ex["meta"][0])
    assert {"discipline", "subject", "level", "sessions", "key_concepts", "mode", "field"} <= set(meta)
    assert ex["context"].to_list() == [""] * ex.height and ex["source"][0].startswith("glan(model=fake")
    assert json.loads((run / "counts.json").read_text())["examples"] == counts["examples"]
    for level in ("disciplines", "subjects", "syllabi", "questions", "questions_unique", "examples"):
        assert any((run / level).glob("part-*.parquet")), level


def test_run_glan_resumes_without_regenerating(tmp_path, fake_llm):
    first = _run(tmp_path, fake_llm(_glan()))
    again = fake_llm(_glan())
    second = _run(tmp_path, again)
    assert _prompts(again) == {"subjects": 0, "syllabi": 0, "concepts": 0, "questions": 0, "answers": 0}
    assert second["examples"] == first["examples"]
    assert all(v["skipped_shards"] == v["shards"] for v in second["levels"].values())


def test_killed_run_redoes_only_missing_shards(tmp_path, fake_llm):
    _run(tmp_path, fake_llm(_glan()))
    (tmp_path / "run" / "syllabi" / "part-00001.parquet").unlink()  # as if killed before this shard
    llm = fake_llm(_glan())
    counts = _run(tmp_path, llm)
    assert _prompts(llm)["syllabi"] == 2 and _prompts(llm)["subjects"] == 0  # shard 1 = 2 subjects
    assert counts["levels"]["syllabi"]["skipped_shards"] == 1


def test_editing_a_subject_regenerates_only_what_follows(tmp_path, fake_llm):
    _run(tmp_path, fake_llm(_glan()))
    path = tmp_path / "run" / "subjects" / "part-00000.parquet"
    subjects = pl.read_parquet(path)
    edited = subjects.with_columns(
        pl.when(pl.int_range(pl.len()) == 0)
        .then(pl.lit("Celestial Mechanics"))
        .otherwise(pl.col("subject"))
        .alias("subject")
    )
    edited.write_parquet(path)
    llm = fake_llm(_glan())
    counts = _run(tmp_path, llm)
    assert _prompts(llm)["subjects"] == 0
    assert _prompts(llm)["syllabi"] == 2  # only the syllabus shard holding the edited subject (shard_size 2)
    assert counts["levels"]["syllabi"]["stale_shards"] == 1
    syllabi = read_shards(tmp_path / "run" / "syllabi")
    assert "Celestial Mechanics" in syllabi["subject"].to_list()
    assert any("Celestial Mechanics" in q for q in read_shards(tmp_path / "run" / "examples")["instruction"])


def test_start_from_an_edited_level_table(tmp_path, fake_llm):
    _run(tmp_path, fake_llm(_glan()))
    subjects = read_shards(tmp_path / "run" / "subjects").head(1)
    table = tmp_path / "subjects.jsonl"
    subjects.write_ndjson(table)
    llm = fake_llm(_glan())
    counts = run_glan(table, tmp_path / "run2", llm, sessions=3, questions_per_syllabus=2, progress=False)
    assert (
        counts["start_level"] == "subjects" and _prompts(llm)["subjects"] == 0 and _prompts(llm)["syllabi"] == 1
    )
    assert counts["questions"] == 2
    assert not (tmp_path / "run2" / "subjects").exists()


def test_same_seed_same_questions(tmp_path, fake_llm):
    a = _run(tmp_path / "a", fake_llm(_glan()), seed=3)
    b = _run(tmp_path / "b", fake_llm(_glan()), seed=3)
    qa = read_shards(tmp_path / "a" / "run" / "questions")
    qb = read_shards(tmp_path / "b" / "run" / "questions")
    assert a["questions"] == b["questions"] and qa.equals(qb)


def test_bad_taxonomy_is_a_clear_error(tmp_path, fake_llm):
    bad = tmp_path / "t.yaml"
    bad.write_text("fields:\n  - name: X\n")
    with pytest.raises(ValueError, match=r"t\.yaml: fields\[0\]: missing 'subfields'"):
        run_glan(bad, tmp_path / "run", fake_llm(_glan()), progress=False)


def test_level_shards_follow_a_shrinking_input(tmp_path):
    from generators.levels import run_level
    from pipelines.shards import write_shards

    def process(chunk):
        return pl.DataFrame({"x": list(chunk)}), []

    run_level(list(range(10)), tmp_path / "lvl", 4, process)  # 3 shards
    outcome = run_level(list(range(5)), tmp_path / "lvl", 4, process)  # shard 0 same, 1 changed, 2 gone
    assert outcome.skipped_shards == 1 and outcome.stale_shards == 2 and outcome.rows == 5
    assert sorted(p.name for p in (tmp_path / "lvl").glob("part-*")) == [
        "part-00000.parquet",
        "part-00001.parquet",
    ]
    write_shards(pl.DataFrame({"x": range(9)}), tmp_path / "t", 4)
    write_shards(pl.DataFrame({"x": range(3)}), tmp_path / "t", 4)
    assert read_shards(tmp_path / "t")["x"].to_list() == [0, 1, 2]


def test_sessions_without_concepts_get_them_in_a_second_call(tmp_path, fake_llm):
    llm = fake_llm(_glan(titles_only=True))
    counts = _run(tmp_path, llm)
    assert counts["concept_calls"] == 12 and _prompts(llm)["concepts"] == 12  # 4 subjects x 3 sessions
    syllabi = read_shards(tmp_path / "run" / "syllabi")
    assert syllabi.height == 12 and syllabi["description"][0] == "about it"
    assert json.loads(syllabi["key_concepts"][0]) == ["Mechanics part 1 idea", "concept 1", "topic 1"]
    assert counts["questions"] == 12


# ---- one level at a time ------------------------------------------------------------------


def test_questions_level_alone_from_a_hand_made_syllabi_table(tmp_path, fake_llm):
    llm = fake_llm(_glan())
    run = run_questions(
        _syllabi_table(), llm, tmp_path / "q", GlanSettings(seed=1, shard_size=4), per_syllabus=3
    )
    specs = question_specs(_syllabi_table(), 3, seed=1)
    assert _prompts(llm) == {**NO_PROMPTS, "questions": 6}  # 2 subjects x 3 draws, nothing else asked
    assert run.table["key_concepts"].to_list() == [json.dumps(s["key_concepts"]) for s in specs]
    assert run.table["subject"].to_list() == ["A"] * 3 + ["B"] * 3
    assert all(q.startswith("Using ") for q in run.table["question"])
    assert run.outcome == {"rows": 6, "rejects": 0, "shards": 2, "skipped_shards": 0, "stale_shards": 0}
    assert (run.calls.generated, run.calls.retried, run.calls.concept_calls) == (6, 0, 0)
    again = fake_llm(_glan())
    rerun = run_questions(
        _syllabi_table(), again, tmp_path / "q", GlanSettings(seed=1, shard_size=4), per_syllabus=3
    )
    assert _prompts(again) == NO_PROMPTS and rerun.outcome["skipped_shards"] == 2 and rerun.calls.generated == 0
    assert rerun.table.equals(run.table)


def _questions_table(*questions):
    return pl.DataFrame(
        [
            {
                "question_id": f"q{i}",
                "subject_id": "A",
                "field": "f",
                "subfield": "sf",
                "discipline": "D",
                "subject": "Mechanics",
                "level": "introductory",
                "mode": "one",
                "sessions": json.dumps(["Forces"]),
                "key_concepts": json.dumps(["force", "mass"]),
                "question": q,
            }
            for i, q in enumerate(questions)
        ]
    )


def test_examples_level_alone_from_a_questions_table(tmp_path, fake_llm):
    q = "Why does a heavier cart need a larger force to reach the same speed?"
    questions = _questions_table(q, "How does concept 3 follow from the first law of motion?")  # refused
    run = run_examples(questions, fake_llm(_glan()), tmp_path / "ex", GlanSettings(seed=2, temperature=0.5))
    assert run.table["instruction"].to_list() == [q]
    assert run.table["response"].to_list() == [f"A worked answer to: {q[:40]}"]
    assert run.table["source"][0] == "glan(model=fake, seed=2, temperature=0.5)"
    meta = json.loads(run.table["meta"][0])
    assert (
        meta["question_id"] == "q0"
        and meta["key_concepts"] == ["force", "mass"]
        and meta["generator"] == "glan"
    )
    assert run.outcome["rows"] == 1 and run.outcome["rejects"] == 1
    assert (run.calls.generated, run.calls.retried) == (4, 2)  # the refusal is asked 3 times
    (rej,) = [json.loads(x) for x in (tmp_path / "ex" / "rejects-00000.jsonl").read_text().splitlines()]
    assert rej["reason"] == "refusal" and rej["question_id"] == "q1" and rej["attempts"] == 3


def test_dedup_level_alone(tmp_path):
    q = "Why does a heavier cart need a larger force to reach the same speed?"
    kept, counts = dedup_questions(_questions_table(q, q.upper()), tmp_path / "u", shard_size=4)
    assert kept["question_id"].to_list() == ["q0"] and counts["exact"] == 1
    assert read_shards(tmp_path / "u").equals(kept)
    assert [
        json.loads(x)["question_id"] for x in (tmp_path / "u" / "dropped.jsonl").read_text().splitlines()
    ] == ["q1"]


def test_syllabi_level_alone_asks_missing_concepts(tmp_path, fake_llm):
    subjects = pl.DataFrame(
        [
            {
                "subject_id": "s1",
                "discipline_id": "d",
                "field": "f",
                "subfield": "sf",
                "discipline": "Physics",
                "subject": "Mechanics",
                "level": "introductory",
                "subtopics": json.dumps(["forces"]),
            }
        ]
    )
    llm = fake_llm(_glan(titles_only=True))
    run = run_syllabi(subjects, llm, tmp_path / "syl", GlanSettings(), sessions=2)
    assert run.table["title"].to_list() == ["Mechanics part 1", "Mechanics part 2"]  # 3 written, 2 kept
    assert json.loads(run.table["key_concepts"][1]) == ["Mechanics part 2 idea", "concept 2", "topic 2"]
    assert _prompts(llm) == {**NO_PROMPTS, "syllabi": 1, "concepts": 2}
    assert (run.calls.generated, run.calls.concept_calls) == (3, 2)


def test_a_level_called_alone_reuses_what_run_glan_wrote(tmp_path, fake_llm):
    """Same fingerprint both ways: a level rerun by hand on run_glan's folder regenerates nothing."""
    _run(tmp_path, fake_llm(_glan()))
    run_dir = tmp_path / "run"
    llm = fake_llm(_glan())
    settings = GlanSettings(shard_size=2)
    run = run_questions(
        read_shards(run_dir / "syllabi"), llm, run_dir / "questions", settings, per_syllabus=3
    )
    assert _prompts(llm) == NO_PROMPTS and run.outcome["skipped_shards"] == run.outcome["shards"] == 6
    assert run.table.equals(read_shards(run_dir / "questions"))


def _files(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _shard_in_child(folder, index):
    from conftest import FakeLLM  # a fresh process: its own fake model with the same answers

    from generators.glan_levels import glan_level_shard

    return glan_level_shard(folder, index, FakeLLM(_glan()))


def test_levels_mapped_over_other_processes_write_the_same_bytes(tmp_path, fake_llm):
    """Each level's shards made in two other processes, last shard first (as a task runner may),
    give the files of the sequential run, and the same counts."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    rounds = []
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:

        def in_children(level, folder, todo):
            rounds.append((level, list(todo)))
            list(pool.map(_shard_in_child, [folder] * len(todo), todo[::-1]))

        seq = _run(tmp_path / "seq", fake_llm(_glan()))
        mapped = _run(tmp_path / "mapped", fake_llm(_glan()), map_shards=in_children)
        assert [level for level, _ in rounds] == ["subjects", "syllabi", "questions", "examples"]
        assert rounds[1] == ("syllabi", [0, 1])  # 4 subjects, 2 a shard
        assert mapped["generated"] == seq["generated"] > 0 and mapped["examples"] == seq["examples"] > 0
        want, got = _files(tmp_path / "seq" / "run"), _files(tmp_path / "mapped" / "run")
        assert want.keys() == got.keys() and "examples/part-00000.parquet" in want
        assert [name for name in want if want[name] != got[name]] == []
        # Rerun: every shard is on disk, so no round has work.
        again = _run(tmp_path / "mapped", fake_llm(_glan()), map_shards=in_children)
        assert len(rounds) == 4 and again["examples"] == seq["examples"]
