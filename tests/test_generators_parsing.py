"""Parsing of LLM answers: JSON repair, line formats, refusals (whole answer), bounded retries."""

from __future__ import annotations

import pytest

from generators.parsing import (
    Reject,
    extract_json,
    generate_parsed,
    is_refusal,
    labelled,
    list_items,
    split_concepts,
)
from pipelines.llm.base import Sampling


@pytest.mark.parametrize(
    "text, expected",
    [
        ('{"a": 1}', {"a": 1}),
        ('Sure! Here it is:\n```json\n{"a": [1, 2]}\n```\nHope it helps.', {"a": [1, 2]}),
        ('{"a": 1, "b": [1, 2,],}', {"a": 1, "b": [1, 2]}),  # trailing commas
        ("{'name': 'x', 'ok': True}", {"name": "x", "ok": True}),  # Python dict syntax
        ('{name: "x", level: "advanced"}', {"name": "x", "level": "advanced"}),  # unquoted keys
        (
            '[{"name": "Optics", "subtopics": ["lenses", "mirr',
            [{"name": "Optics", "subtopics": ["lenses", "mirr"]}],
        ),
        (
            '{"title": "Atoms", "concepts": ["protons",',
            {"title": "Atoms", "concepts": ["protons"]},
        ),  # cut off
        ('The answer is {"a": "it\'s {fine}"} ok', {"a": "it's {fine}"}),  # braces inside a string
    ],
)
def test_extract_json_repairs(text, expected):
    assert extract_json(text) == expected


@pytest.mark.parametrize("text", ["no json here", "{{{{", "{'a': \"mixed quotes' }"])
def test_extract_json_gives_none_when_unrepairable(text):
    assert extract_json(text) is None


@pytest.mark.parametrize(
    "text",
    [
        "I don't know.",
        "I do not know",
        "DO NOT KNOW",
        "Sorry, I cannot answer that question.",
        "I'm not sure.",
        "Unknown",
        "N/A",
        "Answer: I don't know",
        "The answer is not given in the passage.",
        "  I’m sorry, but I can't help with that.  ",
        "As an AI language model, I cannot browse the internet.",
    ],
)
def test_refusals_are_detected(text):
    assert is_refusal(text)


@pytest.mark.parametrize(
    "text",
    [
        "If you don't know the formula, derive it from Newton's second law: F = ma.",
        "I don't know anyone who dislikes this proof; here it is: assume the contrary...",
        "Unknown variables are solved with substitution. First, isolate x.",
        "No",
        "None of the options is correct because the rate doubles.",
        "",
    ],
)
def test_answers_that_contain_refusal_words_are_not_refusals(text):
    assert not is_refusal(text)


def test_line_helpers():
    assert list_items("1. Optics\n2) Waves\n- **Heat**\n\n* 'Sound'") == ["Optics", "Waves", "Heat", "Sound"]
    assert split_concepts("force, mass; Force and acceleration.") == ["force", "mass", "acceleration"]
    text = "**Task:** What is due?\nIt has two lines.\n**Answer**: rent\nExplanation: ..."
    assert labelled(text, ("task",), ("answer",)) == "What is due?\nIt has two lines."
    assert labelled(text, ("answer",), ("explanation",)) == "rent"
    assert labelled("nothing labelled", ("task",)) is None


def _parse_int(text, item):
    return int(text) if text.strip().isdigit() else Reject("not a number", text)


def test_retries_only_failed_items_and_bounds_attempts(fake_llm):
    llm = fake_llm(["1", "x", "y", "2", "z", "still bad"])  # attempt 1: 3 items; 2: items 1,2; 3: item 2
    res = generate_parsed(llm, ["a", "b", "c"], lambda i: i, _parse_int, Sampling(seed=5), retries=2)
    assert res.results[0] == 1 and res.results[1] == 2
    assert isinstance(res.results[2], Reject)
    assert res.results[2].reason == "not a number" and res.results[2].raw == "still bad"
    assert res.results[2].extra["attempts"] == 3
    assert res.generated == 6 and res.retried == 3
    assert [len(c.asks) for c in llm.calls] == [3, 2, 1]  # only the failed items are asked again
    assert len({c.sampling.seed for c in llm.calls}) == 3  # each retry samples with a new seed


def test_parse_value_error_becomes_reject(fake_llm):
    def bad(text, item):
        raise ValueError("broken")

    res = generate_parsed(fake_llm(["a"]), ["x"], lambda i: i, bad, Sampling(), retries=0)
    assert res.results[0].reason == "broken"
    assert res.results[0].to_dict(level="q")["level"] == "q"


def test_truncated_object_drops_a_dangling_key():
    assert extract_json('{"a": 1, "b"') == {"a": 1}
    assert extract_json('{"a": 1, "b": "hal') == {"a": 1, "b": "hal"}
