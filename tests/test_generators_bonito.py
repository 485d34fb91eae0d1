"""Bonito generator: the exact meta-template, <|pipe|> and chat parsing, rows, resume and counts."""

from __future__ import annotations

import json

import pytest

from generators.bonito import run_bonito, to_row
from generators.bonito_chat import CHAT_EXAMPLES, chat_prompt, parse_chat
from generators.bonito_template import TASK_TYPES, bonito_prompt, parse_bonito, task_type
from generators.parsing import Reject
from pipelines.shards import read_rejects, read_shards

PASSAGE = "The ferry leaves the harbour at 7:15 every morning. Tickets cost 4 euros, or 2 euros for students."
ITEM = {"text_id": "p1", "text": PASSAGE, "task_type": "exqa", "sample": 0, "passage_meta": {"id": "p1"}}


def test_bonito_template_is_exact():
    expected = (
        "<|tasktype|>\nextractive question answering\n<|context|>\n"
        "The ferry leaves the harbour at 7:15 every morning. Tickets cost 4 euros, or 2 euros for students."
        "\n<|task|>\n"
    )
    assert bonito_prompt("  " + PASSAGE + "\n\n", "exqa") == expected
    assert bonito_prompt(PASSAGE, "extractive question answering") == expected
    assert bonito_prompt("x", "nli") == "<|tasktype|>\nnatural language inference\n<|context|>\nx\n<|task|>\n"


def test_sixteen_task_types_short_and_full_names():
    assert len(TASK_TYPES) == 16 and set(CHAT_EXAMPLES) == set(TASK_TYPES)
    for short, full in TASK_TYPES.items():
        assert task_type(short) == short and task_type(full.upper()) == short
    assert task_type("Yes-No Question Answering") == "ynqa"
    assert task_type("paraphrase id") == "paraphrase_id"
    with pytest.raises(ValueError, match="unknown task type 'poetry'.*exqa"):
        task_type("poetry")


def test_parse_bonito_answer():
    text = "{{context}}\n\nWhen does the ferry leave?\n<|pipe|>\n7:15 every morning"
    parsed = parse_bonito(text, ITEM)
    assert parsed == {
        "template": "{{context}}\n\nWhen does the ferry leave?",
        "response": "7:15 every morning",
    }
    row = to_row(parsed, ITEM, "bonito", "bonito(test)")
    assert row["instruction"] == "When does the ferry leave?"  # placeholder out: the passage is the context
    assert row["context"] == PASSAGE and row["response"] == "7:15 every morning"
    meta = json.loads(row["meta"])
    assert meta["task_type"] == "exqa" and meta["text_id"] == "p1"
    assert meta["instruction_template"].startswith("{{context}}") and meta["has_context_placeholder"]


@pytest.mark.parametrize(
    "text, reason",
    [
        ("When does the ferry leave? 7:15", "missing <|pipe|>"),
        ("When does the ferry leave?\n<|pipe|>\n", "empty response"),
        ("<|pipe|>\n7:15", "empty instruction"),
        ("{{context}} When does it leave?\n<|pipe|>\nI don't know.", "refusal"),
    ],
)
def test_parse_bonito_rejects(text, reason):
    r = parse_bonito(text, ITEM)
    assert isinstance(r, Reject) and r.reason == reason and r.raw == text


def test_chat_prompt_is_one_shot_with_the_passage_last():
    msgs = chat_prompt(PASSAGE, "ynqa")
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"]
    assert "yes-no question answering" in msgs[2]["content"] and PASSAGE in msgs[2]["content"]
    assert msgs[1]["content"].startswith("Task: " + CHAT_EXAMPLES["ynqa"][0])


def test_task_without_answer_is_kept_for_a_second_call():
    assert parse_chat("Task: How much is a ticket for students?", ITEM) == {
        "template": "How much is a ticket for students?",
        "response": None,
    }


def test_parse_chat():
    text = "**Task:** How much does a student ticket cost?\n**Answer:** 2 euros\n\nExplanation: stated in the text."
    assert parse_chat(text, ITEM) == {
        "template": "How much does a student ticket cost?",
        "response": "2 euros",
    }
    qa = {**ITEM, "task_type": "qa"}
    assert (
        parse_chat('{"question": "What time does the ferry leave?", "answer": "At 7:15."}', qa)["response"]
        == "At 7:15."
    )


@pytest.mark.parametrize(
    "text, item, reason",
    [
        ("Answer: 2 euros", ITEM, "no 'Task:' line"),
        ("Task: How much is a ticket?\nAnswer: 3 pounds", ITEM, "extractive answer not found in the passage"),
        ("Task: What time does the museum close?\nAnswer: 7:15", ITEM, "copies the worked example"),
        (
            "Task: How much is a ticket for students?\nAnswer: Sorry, I cannot answer that.",
            {**ITEM, "task_type": "qa"},
            "refusal",
        ),
        ("Task: Cost?\nAnswer: 2 euros", ITEM, "task shorter than 3 words"),
    ],
)
def test_parse_chat_rejects(text, item, reason):
    r = parse_chat(text, item)
    assert isinstance(r, Reject) and r.reason == reason


def _answer(ask):
    """Chat mode: answers by task type; bonito mode: pipe answers, one without the pipe."""
    if isinstance(ask.prompt, str):  # bonito mode
        passage = ask.text.split("<|context|>\n")[1].split("\n<|task|>")[0]
        return "no pipe here" if "Sundays" in passage else "{{context}}\nWhat is this about?\n<|pipe|>\nRules."
    if _is_answer_call(ask):  # the second call: answer a task written alone
        return "Answer: 7:15" if "ferry" in ask.text else "Answer: 2019"
    first = ask.text.split("Passage: ")[1].split()[:3]
    if "text generation" in ask.text:  # a task line only
        return "Task: In which year did the stations open?"
    if "extractive" in ask.text:
        return f"Task: Which words open the passage?\nAnswer: {' '.join(first)}"
    return "Task: What is the main point of the passage?\nAnswer: I don't know."


def _is_answer_call(ask) -> bool:
    return not isinstance(ask.prompt, str) and not ask.text.startswith("Passage:")


def test_run_bonito_chat_counts_rows_and_rejects(tmp_path, fake_llm):
    llm = fake_llm(_answer)
    counts = run_bonito(
        "data/passages.jsonl",
        tmp_path,
        llm,
        task_types=("exqa", "qa"),
        shard_size=4,
        retries=1,
        progress=False,
    )
    n = counts["passages"]
    assert n == 7 and counts["items"] == 2 * n
    assert counts["rows"] == n and counts["rejects"] == n  # qa answers all decline
    assert counts["reject_reasons"] == {"refusal": n}
    assert counts["generated"] == 2 * n + n  # every refused qa item was asked once more
    ex = read_shards(tmp_path / "examples")
    assert ex.height == counts["examples"] == n
    row = ex.to_dicts()[0]
    meta = json.loads(row["meta"])
    assert meta["task_type"] == "exqa" and meta["text_id"] == "kitchen-bread" and meta["mode"] == "chat"
    assert row["context"].startswith("Bread rises") and row["source"].startswith("bonito(mode=chat")
    rejects = read_rejects(tmp_path / "generated")
    assert {r["task_type"] for r in rejects} == {"qa"} and all(r["raw"] for r in rejects)

    again = fake_llm(_answer)
    second = run_bonito(
        "data/passages.jsonl",
        tmp_path,
        again,
        task_types=("exqa", "qa"),
        shard_size=4,
        retries=1,
        progress=False,
    )
    assert again.asks == [] and second["examples"] == counts["examples"]
    assert second["shards"]["skipped_shards"] == second["shards"]["shards"]


def test_run_bonito_mode_and_dedup(tmp_path, fake_llm):
    counts = run_bonito(
        "data/passages.jsonl",
        tmp_path,
        fake_llm(_answer),
        task_types=("summarization",),
        samples_per_passage=2,
        mode="bonito",
        retries=0,
        max_passages=6,
        progress=False,
    )
    # passage 6 (library hours, mentions Sundays) never has a pipe; each passage's 2 samples are equal
    assert counts["rejects"] == 2 and counts["reject_reasons"] == {"missing <|pipe|>": 2}
    assert counts["rows"] == 10 and counts["dedup"]["exact"] == 5 and counts["examples"] == 5
    dropped = (tmp_path / "examples" / "dropped.jsonl").read_text().splitlines()
    assert len(dropped) == 5


def test_unknown_mode(tmp_path, fake_llm):
    with pytest.raises(ValueError, match="unknown mode"):
        run_bonito("data/passages.jsonl", tmp_path, fake_llm(_answer), mode="poem", progress=False)


def test_missing_answers_come_from_a_second_call(tmp_path, fake_llm):
    llm = fake_llm(_answer)
    # text_gen: a free-text form (answer_forms.py), so only the second call is under test here
    counts = run_bonito("data/passages.jsonl", tmp_path, llm, task_types=("text_gen",), retries=0, progress=False)
    assert counts["answered_separately"] == 7 and sum(map(_is_answer_call, llm.asks)) == 7
    assert counts["examples"] == 7 and counts["rejects"] == 0
    assert set(read_shards(tmp_path / "examples")["response"]) == {"2019"}
    exqa = {**ITEM, "task_type": "exqa"}
    from generators.bonito_chat import check_answer

    assert check_answer("Answer: 7:15", exqa, "raw") == "7:15"
    assert check_answer("8:30", exqa, "raw").reason == "extractive answer not found in the passage"


def test_looping_and_unfinished_answers():
    from generators.bonito_chat import check_answer

    qa = {**ITEM, "task_type": "qa"}
    assert check_answer("1.5.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1", qa, "raw").reason == "degenerate repetition"
    cut = (
        "The ferry leaves at 7:15 every morning from the harbour. Students pay half of the normal fare, "
        "which is 2 euros instead of 4, and they must show a"
    )
    assert check_answer(cut, qa, "raw") == "The ferry leaves at 7:15 every morning from the harbour."


def test_extractive_span_ignores_case_and_punctuation():
    from generators.answer_forms import is_span

    passage = "made between Hanover Direct, Inc. (\u201cHDI\u201d), a New Jersey Corporation"
    assert is_span('"HDI"', passage) and is_span("hanover direct inc", passage)
    assert not is_span("Hanover Inc", passage) and not is_span("DI", passage) and not is_span("...", passage)
