"""End to end on the embedded SmolLM2-135M model, small budgets (pytest -m integration)."""

from __future__ import annotations

import json

import pytest

from generators.bonito import run_bonito
from generators.glan import run_glan
from pipelines.shards import read_shards

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def llm():
    from pipelines.llm import make_backend

    return make_backend("hf", model="embedded")


def test_bonito_chat_end_to_end(llm, tmp_path):
    counts = run_bonito(
        "data/passages.jsonl",
        tmp_path,
        llm,
        task_types=("qa", "ynqa"),
        max_passages=3,
        max_tokens=64,
        retries=1,
        progress=False,
    )
    assert counts["items"] == 6
    assert counts["rows"] + counts["rejects"] == 6
    assert counts["examples"] >= 1  # a 135M model still gets some right with the one-shot prompt
    ex = read_shards(tmp_path / "examples")
    assert set(json.loads(ex["meta"][0])) >= {"task_type", "text_id", "mode"}
    assert all(c for c in ex["context"])  # the passage is kept
    again = run_bonito(
        "data/passages.jsonl",
        tmp_path,
        llm,
        task_types=("qa", "ynqa"),
        max_passages=3,
        max_tokens=64,
        retries=1,
        progress=False,
    )
    assert again["generated"] == 0 and again["examples"] == counts["examples"]


def test_glan_end_to_end(llm, tmp_path):
    counts = run_glan(
        "data/taxonomy.yaml",
        tmp_path,
        llm,
        max_disciplines=1,
        subjects_per_discipline=1,
        queries_per_discipline=1,
        sessions=3,
        questions_per_syllabus=2,
        max_tokens=96,
        temperature=0.7,
        retries=2,
        progress=False,
    )
    assert counts["subjects"] >= 1 and counts["syllabi"] >= 1
    assert counts["questions"] + counts["levels"]["questions"]["rejects"] == 2
    assert counts["examples"] >= 1
    row = read_shards(tmp_path / "examples").to_dicts()[0]
    meta = json.loads(row["meta"])
    assert meta["discipline"] == "Astronomy" and meta["key_concepts"] and row["response"]
