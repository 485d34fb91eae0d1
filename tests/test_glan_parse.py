"""GLAN's parsers on hand-written answers: the line formats a small model writes, JSON from bigger
ones, and the rejects (refusals, echoes, degenerate repetition, placeholders)."""

from __future__ import annotations

from generators.glan_parse import parse_answer, parse_concepts, parse_question, parse_subjects, parse_syllabus
from generators.parsing import Reject

D = {"discipline": "Astronomy"}


def test_parse_subject_lines_as_a_small_model_writes_them():
    text = (
        "Observational Astronomy | introductory | telescopes, the night sky, magnitudes\n"
        "2. **Stellar Physics** | Intermediate level | fusion; stellar mass\n"
        "Cosmology - the universe as a whole\n"
        "Subject name | level | subtopics\n"  # the format line echoed back: not a subject
        "Observational astronomy | advanced | repeats\n"  # duplicate name: dropped
    )
    subjects = parse_subjects(text, D)
    assert [s["subject"] for s in subjects] == ["Observational Astronomy", "Stellar Physics", "Cosmology"]
    assert subjects[0] == {
        "subject": "Observational Astronomy",
        "level": "introductory",
        "subtopics": ["telescopes", "the night sky", "magnitudes"],
    }
    assert subjects[1]["level"] == "intermediate" and subjects[1]["subtopics"] == ["fusion", "stellar mass"]
    assert subjects[2]["subtopics"] == ["the universe as a whole"]


def test_parse_subjects_json_and_garbage():
    js = '```json\n[{"name": "Optics", "level": "advanced", "subtopics": ["lenses", "lasers"]},]\n```'
    assert parse_subjects(js, D) == [
        {"subject": "Optics", "level": "advanced", "subtopics": ["lenses", "lasers"]}
    ]
    assert isinstance(parse_subjects("{ } ]] 0 1 2 }\n: , 7 :", D), Reject)  # token soup
    rej = parse_subjects("", D)
    assert isinstance(rej, Reject) and "no subject" in rej.reason


def test_parse_syllabus_lines():
    text = (
        "Here is the syllabus:\n"
        "Session 1: Stars - how stars form | nebulae, gravity, protostars\n"
        "Session 2: Stellar energy | Key concepts: fusion, the proton-proton chain\n"
        "3. Star death: supernovae and remnants. Key concepts: supernova, neutron star\n"
        "Session 4: Galaxies\n"  # no key concepts: unusable, dropped
    )
    sessions = parse_syllabus(text, {})
    assert [s["title"] for s in sessions] == ["Stars", "Stellar energy", "Star death"]
    assert sessions[0]["description"] == "how stars form"
    assert sessions[0]["key_concepts"] == ["nebulae", "gravity", "protostars"]
    assert sessions[1]["key_concepts"] == ["fusion", "the proton-proton chain"]
    assert sessions[2]["key_concepts"] == ["supernova", "neutron star"]


def test_parse_syllabus_json_and_rejects():
    js = '{"sessions": [{"title": "Atoms", "description": "matter", "key_concepts": "protons, electrons"}]}'
    assert parse_syllabus(js, {}) == [
        {"title": "Atoms", "description": "matter", "key_concepts": ["protons", "electrons"]}
    ]
    assert parse_syllabus("Session 1: Stars\nSession 2: Planets", {}).reason.startswith("no session")
    loop = "Session 1: Grains | " + ", ".join(["grains"] * 60)  # a loop is repaired: concepts deduplicated
    assert parse_syllabus(loop, {}) == [{"title": "Grains", "description": "", "key_concepts": ["grains"]}]
    soup = " ".join(["stars stars stars"] * 30)
    assert parse_syllabus(soup, {}).reason == "degenerate repetition"
    no_pipe = "Session 1: Marine chemistry - salts, gases, nutrients, marine chemistry - salts"
    assert parse_syllabus(no_pipe, {})[0]["key_concepts"] == [
        "salts",
        "gases",
        "nutrients",
        "marine chemistry - salts",
    ]


def test_parse_question():
    assert parse_question(
        "Question: Why do heavier stars burn their fuel faster?\nAnswer: because...", {}
    ) == ("Why do heavier stars burn their fuel faster?")
    assert parse_question(
        "**Problem 1:** Compute the escape velocity of the Moon from its mass and radius.", {}
    ) == ("Compute the escape velocity of the Moon from its mass and radius.")
    assert parse_question("Stars?", {}).reason == "question shorter than 5 words"
    assert parse_question(
        "Write a homework question for the course about stars and planets.", {}
    ).reason.startswith("echoes")
    assert parse_question("I don't know.", {}).reason == "refusal"


def test_unfinished_answer_is_cut_to_its_last_sentence():
    done = (
        "Stars shine because fusion in their cores turns hydrogen into helium. The mass lost in each "
        "reaction becomes energy, as Einstein's relation says. Heavier stars have hotter cores, so they "
        "fuse faster and live shorter lives. "
    )
    assert parse_answer(done + "The energy then travels outwards through the radiative", {}) == done.strip()
    assert parse_answer(done + "End.", {}) == done + "End."
    assert parse_answer("A short answer without a full stop", {}) == "A short answer without a full stop"


def test_parse_answer_refusal_is_whole_answer():
    assert parse_answer("I do not know.", {}).reason == "refusal"
    ok = "I don't know the exact mass, but we can estimate it: M = 4π²a³/(GT²) gives about 2e30 kg."
    assert parse_answer(ok, {}) == ok
    assert parse_answer("Answer: 42 kg", {}) == "42 kg"
    assert parse_answer("   ", {}).reason == "empty answer"


def test_parse_concepts():
    assert parse_concepts("Key concepts: nebulae, gravity; protostars and more words here", None) == [
        "nebulae",
        "gravity",
        "protostars",
        "more words here",
    ]
    assert parse_concepts("- fusion\n- stellar mass\n- fusion", None) == ["fusion", "stellar mass"]
    assert parse_concepts("ecosystems ecosystems, ", None).reason == "no key concepts"
