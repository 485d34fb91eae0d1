"""Structured generation: a backend that constrains decoding gets the JSON levels' schemas and
its answers need no repair; a backend that does not keeps today's parse-and-repair path. Both
go through the project's own OpenAI-compatible server."""

from __future__ import annotations

import json

import polars as pl
import pytest

from generators.glan_level_run import GlanSettings
from generators.glan_levels import run_subjects, run_syllabi
from generators.glan_prompts import LEVEL_SCHEMAS
from pipelines.llm.openai_backend import OpenAIBackend
from pipelines.llm.serve import OpenAICompatServer
from pipelines.llm.vllm_backend import structured_kwargs


def _schema_aware(ask) -> str:
    """JSON of the requested schema when one is given, else the line format a small chat model
    writes (which the parsers must repair)."""
    schema = ask.sampling.json_schema
    if schema is None and "class sessions" in ask.text:
        return "\n".join(f"Session {i}: Topic {i} - what it covers | a, b" for i in range(1, 4))
    if schema is None:
        return "1. Mechanics | introductory | forces, motion\n2. Optics | intermediate | lenses, light"
    if schema["title"] == "subjects":
        return json.dumps({"subjects": [
            {"name": "Mechanics", "level": "introductory", "subtopics": ["forces", "motion"]},
            {"name": "Optics", "level": "intermediate", "subtopics": ["lenses", "light"]}]})
    return json.dumps({"sessions": [
        {"title": f"Session topic {i}", "description": "what it covers", "key_concepts": ["a", "b"]}
        for i in range(1, 4)]})


DISCIPLINES = pl.DataFrame({"discipline_id": ["d1"], "field": ["Science"], "subfield": ["Physics"],
                            "discipline": ["Physics"]})


@pytest.fixture
def served(fake_llm):
    bodies: list[dict] = []

    def record(path, body):
        bodies.append(body)
        return None  # answer with the backend

    llm = fake_llm(_schema_aware, structured_output=True, name="scripted", model_id="scripted")
    with OpenAICompatServer(llm, model_name="scripted", before_request=record) as server:
        yield server, bodies


def _levels(llm, tmp_path):
    settings = GlanSettings(seed=0, shard_size=4, retries=0, structured=llm.structured_output)
    subjects = run_subjects(DISCIPLINES, llm, tmp_path / "subjects", settings, per_discipline=2, queries=1)
    syllabi = run_syllabi(subjects.table, llm, tmp_path / "syllabi", settings, sessions=3)
    return subjects, syllabi


def test_constrained_backend_gets_the_schema_and_needs_no_repair(served, tmp_path):
    server, bodies = served
    llm = OpenAIBackend("scripted", base_url=server.url, max_retries=0)
    subjects, syllabi = _levels(llm, tmp_path)
    assert subjects.table["subject"].to_list() == ["Mechanics", "Optics"]
    assert syllabi.table.height == 6  # 3 sessions for each subject
    asked = {b["response_format"]["json_schema"]["schema"]["title"] for b in bodies}
    assert asked == {"subjects", "syllabus"}
    assert "Reply with JSON only" in bodies[0]["messages"][-1]["content"]
    calls = subjects.calls + syllabi.calls
    assert calls.json_answers == 3 and calls.repaired == 0


def test_unconstrained_backend_keeps_the_repair_path_and_counts_it(served, tmp_path):
    server, bodies = served
    llm = OpenAIBackend("scripted", base_url=server.url, max_retries=0)
    llm.structured_output = False  # e.g. an endpoint without response_format support
    subjects, syllabi = _levels(llm, tmp_path)
    assert subjects.table["subject"].to_list() == ["Mechanics", "Optics"]
    assert not any("response_format" in b for b in bodies)
    calls = subjects.calls + syllabi.calls
    assert calls.json_answers == 3 and calls.repaired == 3


def test_vllm_structured_kwargs_pick_the_installed_api():
    class New:
        class sampling_params:  # noqa: N801 -- mimics the module
            class StructuredOutputsParams:
                def __init__(self, json):
                    self.json = json

    class Old:
        class sampling_params:  # noqa: N801
            class GuidedDecodingParams:
                def __init__(self, json):
                    self.json = json

    schema = LEVEL_SCHEMAS["subjects"]
    assert structured_kwargs(New, schema)["structured_outputs"].json is schema
    assert structured_kwargs(Old, schema)["guided_decoding"].json is schema
    assert structured_kwargs(Old, None) == {}
