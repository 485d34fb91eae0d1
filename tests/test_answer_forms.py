"""Answers in their task type's form (generators/answer_forms.py), and GLAN's per-level counts
checked against what was asked: a failing answer is re-asked within the retry bound, then kept
as a reject with its reason and counted -- never kept as it is, never dropped silently."""

from __future__ import annotations

import json

import pytest

from generators.answer_forms import check_form, options
from generators.bonito import run_bonito
from generators.bonito_chat import CHAT_EXAMPLES, EXAMPLE_PASSAGE, check_answer, parse_chat
from generators.bonito_template import parse_bonito
from generators.glan import run_glan
from generators.glan_level_run import GlanSettings
from generators.glan_levels import run_syllabi
from generators.parsing import Reject
from pipelines.shards import read_rejects, read_shards

PASSAGE = "The ferry leaves the harbour at 7:15 every morning. Tickets cost 4 euros, or 2 euros for students."
YN_TASK = "Does the ferry leave in the morning?"
MC_TASK = "When does the ferry leave?\nA. 6:00\nB. 7:15\nC. Noon\nD. Midnight"
PROSE = (  # what a small model writes for a yes/no task: 300+ characters of paragraph
    "According to the passage, the ferry departs from the harbour at a quarter past seven each day, "
    "which is early in the morning. Tickets are priced at four euros for most passengers, while students "
    "pay only two euros. This suggests the service is aimed at commuters and young people who travel to "
    "work or school before the day begins in earnest."
)


def _item(task_type: str) -> dict:
    return {"text_id": "p1", "text": PASSAGE, "task_type": task_type, "sample": 0, "passage_meta": {}}


def test_every_worked_example_has_its_own_form():
    """The one-shot examples the model imitates must pass the checks they teach."""
    for task_type, (task, answer) in CHAT_EXAMPLES.items():
        got = check_form(task_type, answer, task, EXAMPLE_PASSAGE)
        assert not isinstance(got, Reject), (task_type, got)


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("Yes", "Yes"),
        ("no.", "No"),
        ("**Yes**", "Yes"),
        ("Yes, it leaves at 7:15 every morning, as the passage says in its first sentence.", "Yes"),
        ("No - only in the morning.", "No"),
    ],
)
def test_yes_no_answers_are_normalised_to_the_bare_label(answer, expected):
    assert check_answer(answer, _item("ynqa"), "raw", YN_TASK) == expected


@pytest.mark.parametrize(
    "answer",
    [
        PROSE,
        "No one knows.",
        "It does.",
    ],
)
def test_yes_no_prose_is_rejected(answer):
    got = check_answer(answer, _item("ynqa"), "raw", YN_TASK)
    assert isinstance(got, Reject) and got.reason == "yes/no answer is not Yes or No" and got.raw == "raw"


def test_an_answer_that_repeats_its_question_is_rejected_for_every_type():
    for task_type in ("qa", "ynqa", "text_gen", "wsd"):
        for echo in (YN_TASK, YN_TASK.upper().rstrip("?"), f"{YN_TASK} {YN_TASK}"):
            got = check_answer(echo, _item(task_type), "raw", YN_TASK)
            assert isinstance(got, Reject) and got.reason == "answer repeats the question", (task_type, echo)
    # An answer that merely shares words with the question is fine.
    assert (
        check_answer("It leaves at 7:15.", _item("qa"), "raw", "When does the ferry leave?")
        == "It leaves at 7:15."
    )


@pytest.mark.parametrize("answer", ["B", "b)", "B. 7:15", "7:15", "The answer is B", "(B)"])
def test_mcqa_answer_among_the_options_is_normalised(answer):
    assert check_answer(answer, _item("mcqa"), "raw", MC_TASK) == "B. 7:15"


@pytest.mark.parametrize(
    "answer, task, reason",
    [
        ("E", MC_TASK, "multiple-choice answer is not one of the offered options"),
        ("8:30", MC_TASK, "multiple-choice answer is not one of the offered options"),
        ("B. Noon", MC_TASK, "multiple-choice answer's letter and text name different options"),
        ("7:15", "When does the ferry leave?", "multiple-choice task offers no options (A. ... B. ...)"),
    ],
)
def test_mcqa_answer_not_among_the_options_is_rejected(answer, task, reason):
    got = check_answer(answer, _item("mcqa"), "raw", task)
    assert isinstance(got, Reject) and got.reason == reason


def test_options_inline_and_on_lines():
    assert options("Pick one: (A) red (B) blue (C) green") == {"A": "red", "B": "blue", "C": "green"}
    assert options(MC_TASK)["D"] == "Midnight"
    assert options("What is A. Smith's job?") == {}  # one "option" is no choice


def test_other_forms_labels_span_question_summary():
    assert check_form("nli", "Contradiction: it leaves at 7:15.", "x", PASSAGE) == "Contradiction"
    assert check_form("sentiment", "positive", "x", PASSAGE) == "Positive"
    assert check_form("nli", "Maybe.", "x", PASSAGE).reason.startswith("nli answer is not one of")
    assert check_form("exqa", "7:15 every morning", "x", PASSAGE) == "7:15 every morning"
    assert check_form("exqa", "8:30", "x", PASSAGE).reason == "extractive answer not found in the passage"
    assert check_form("qg", "When does the ferry leave?", "x", PASSAGE).endswith("?")
    assert check_form("qg", "7:15", "x", PASSAGE).reason == "question generation answer is not a question"
    assert check_form("coref", "The ferry", "x", PASSAGE) == "The ferry"
    assert isinstance(check_form("coref", "The bus", "x", PASSAGE), Reject)
    assert (
        check_form("summarization", PASSAGE + " Indeed.", "x", PASSAGE).reason
        == "summary is not shorter than the passage"
    )
    assert check_form("topic_class", "The topic of the passage is transport.", "x", PASSAGE) == "transport"


def test_chat_and_bonito_parsers_apply_the_form():
    chat = parse_chat(f"Task: {YN_TASK}\nAnswer: Yes, at 7:15 every morning.", _item("ynqa"))
    assert chat == {"template": YN_TASK, "response": "Yes"}
    prose = parse_chat(f"Task: {YN_TASK}\nAnswer: The ferry leaves at 7:15.", _item("ynqa"))
    assert prose.reason == "yes/no answer is not Yes or No"
    piped = parse_bonito("{{context}}\n" + MC_TASK + "\n<|pipe|>\nC", _item("mcqa"))
    assert piped["response"] == "C. Noon"
    echoed = parse_bonito("{{context}}\n" + YN_TASK + "\n<|pipe|>\n" + YN_TASK, _item("ynqa"))
    assert echoed.reason == "answer repeats the question"


def _prose_then_yes(stubborn: bool = False):
    """Chat mode: a yes/no task answered in prose first, then (on a retry) with a bare Yes;
    ``stubborn``: prose every time."""

    def answer(ask):
        good = ask.attempt > 0 and not stubborn
        return f"Task: {YN_TASK}\nAnswer: " + ("Yes." if good else PROSE)

    return answer


def test_ynqa_prose_is_retried_then_kept_or_rejected_and_counted(tmp_path, fake_llm):
    passages = tmp_path / "p.jsonl"
    passages.write_text(json.dumps({"text": PASSAGE}) + "\n")
    counts = run_bonito(
        passages, tmp_path / "ok", fake_llm(_prose_then_yes()), task_types=("ynqa",), retries=2, progress=False
    )
    assert counts["examples"] == 1 and counts["retried"] == 1 and counts["rejects"] == 0
    assert read_shards(tmp_path / "ok" / "examples")["response"].to_list() == ["Yes"]

    llm = fake_llm(_prose_then_yes(stubborn=True))
    counts = run_bonito(passages, tmp_path / "bad", llm, task_types=("ynqa",), retries=2, progress=False)
    assert len(llm.calls) == 3 and counts["examples"] == 0  # 1 try + 2 retries, then a reject
    assert counts["reject_reasons"] == {"yes/no answer is not Yes or No": 1}
    (rej,) = read_rejects(tmp_path / "bad" / "generated")
    assert rej["attempts"] == 3 and rej["task_type"] == "ynqa" and "quarter past seven" in rej["raw"]
    assert any(
        "1 of 1 tasks rejected" in n and "yes/no answer is not Yes or No: 1" in n for n in counts["notes"]
    )


# ---- GLAN: counts per level against what was asked ------------------------------------------


def _short_syllabus(fix_on_retry: bool = False):
    """Writes one session where three were asked; with ``fix_on_retry`` the retry has all three."""

    def answer(ask):
        n = 3 if (fix_on_retry and ask.attempt > 0) else 1
        return "\n".join(f"Session {i}: Part {i} | idea {i}, concept {i}" for i in range(1, n + 1))

    return answer


SUBJECTS = [
    {
        "subject_id": "s1",
        "discipline_id": "d",
        "field": "f",
        "subfield": "sf",
        "discipline": "Physics",
        "subject": "Mechanics",
        "level": "introductory",
        "subtopics": "[]",
    }
]


def test_syllabus_with_too_few_sessions_is_retried_then_rejected(tmp_path, fake_llm):
    import polars as pl

    llm = fake_llm(_short_syllabus())
    run = run_syllabi(pl.DataFrame(SUBJECTS), llm, tmp_path / "syl", GlanSettings(retries=2), sessions=3)
    assert len(llm.calls) == 3 and run.table.height == 0  # nothing kept short
    (rej,) = read_rejects(tmp_path / "syl")
    assert rej["reason"] == "fewer sessions than asked" and (rej["got"], rej["asked"], rej["attempts"]) == (
        1,
        3,
        3,
    )

    llm = fake_llm(_short_syllabus(fix_on_retry=True))
    run = run_syllabi(pl.DataFrame(SUBJECTS), llm, tmp_path / "syl2", GlanSettings(retries=2), sessions=3)
    assert len(llm.calls) == 2 and run.table["title"].to_list() == ["Part 1", "Part 2", "Part 3"]
    assert run.calls.retried == 1 and read_rejects(tmp_path / "syl2") == []


def test_glan_counts_shortfalls_and_surplus_and_says_so(tmp_path, fake_llm):
    """Asked 2 subjects per discipline, a model that names 3 (one left out) and writes syllabi
    of 1 session where 2 were asked: every syllabus is rejected, each subject is short."""

    def answer(ask):
        if ask.text.startswith("List"):
            return "Optics | introductory | a, b\nAcoustics | intermediate | c\nHeat | advanced | d"
        return "Session 1: Basics | idea, concept"

    counts = run_glan(
        "data/taxonomy.yaml",
        tmp_path / "run",
        fake_llm(answer),
        max_disciplines=1,
        subjects_per_discipline=2,
        queries_per_discipline=1,
        sessions=2,
        questions_per_syllabus=1,
        retries=1,
        progress=False,
    )
    assert counts["subjects"] == 2 and counts["surplus_cut"] == 1 and counts["syllabi"] == 0
    assert counts["shortfalls"]["sessions_per_syllabus"] == {"asked": 2, "inputs": 2, "short": 2}
    assert counts["shortfalls"]["subjects_per_discipline"]["short"] == 0
    assert counts["reject_reasons"] == {"syllabi: fewer sessions than asked": 2}
    notes = " | ".join(counts["notes"])
    assert "2 of 2 inputs got fewer sessions per syllabus than the 2 asked" in notes
    assert "1 subjects or sessions beyond the number asked were left out" in notes


@pytest.mark.parametrize(
    "task, ok",
    [
        ("Does the ferry leave in the morning?", True),
        ("According to the passage, is a student ticket cheaper?", True),
        ("Do these two sentences mean the same? Answer yes or no.", True),
        ("What happens to the ferry in winter?", False),  # what the embedded model wrote for ynqa
        ("The ferry leaves at 7:15.", False),
        ("How to sort a list of strings in Python?", False),
    ],
)
def test_a_yes_no_task_must_ask_a_yes_no_question(task, ok):
    from generators.answer_forms import check_task

    assert (check_task("ynqa", task) is None) == ok
    parsed = parse_chat(f"Task: {task}\nAnswer: Yes", _item("ynqa"))
    assert (
        (parsed == {"template": task, "response": "Yes"})
        if ok
        else parsed.reason == "yes/no task is not a yes/no question"
    )


def test_a_multiple_choice_task_with_a_repeated_option_is_rejected():
    task = "On what day?\nA. Monday\nB. Friday\nC. Monday\nD. Every day"
    assert (
        parse_chat(f"Task: {task}\nAnswer: B", _item("mcqa")).reason
        == "multiple-choice task repeats an option"
    )
