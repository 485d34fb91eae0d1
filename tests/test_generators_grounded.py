"""Grounded task types: answers taken from the passage first, labels known by construction, no LLM."""

from __future__ import annotations

import json

import pytest

from generators.bonito import run_bonito
from generators.grounded import flip_claim, grounded_task, sentences, split_tail
from pipelines.llm.retry import Reject
from pipelines.shards import read_rejects, read_shards

ABSTRACT = (
    "Obesity is common among adults with asthma. We studied 120 patients over 12 months. "
    "Weight loss was recorded every 3 months. Lung function was measured with spirometry. "
    "Patients who lost weight had fewer exacerbations. "
    "In conclusion, weight loss is associated with better asthma control in obese adults."
)
NEGATED = ABSTRACT.replace("weight loss is associated", "there was no significant difference in asthma control after weight loss")


def item(text: str, task_type: str, sample: int = 0, text_id: str = "p1") -> dict:
    return {"text": text, "task_type": task_type, "text_id": text_id, "sample": sample, "passage_meta": {}}


@pytest.mark.parametrize("clause, flipped", [
    ("weight loss is associated with better control", "weight loss is not associated with better control"),
    ("there was no significant difference in control", "there was a significant difference in control"),
    ("the drug did not improve survival", "the drug did improve survival"),
    ("there was no association with age", "there was an association with age"),
    ("the scores were not different", "the scores were different"),
    ("neither drug was not tolerated", None),  # two negations: the flip is not known
    ("patients who were treated had fewer relapses", None),  # the auxiliary sits in a relative clause
    ("exercise helps", None),  # no auxiliary verb to negate
])
def test_flip_claim(clause, flipped):
    assert flip_claim(clause) == flipped


def test_conclusion_answer_is_the_passages_closing_sentences():
    task = grounded_task(item(ABSTRACT, "conclusion"), seed=0)
    head, tail = split_tail(sentences(ABSTRACT))
    assert task["response"] == " ".join(tail) and task["context"] == " ".join(head)
    assert task["response"] not in task["context"] and task["response"] in ABSTRACT
    assert "conclusion" not in task["context"].lower()


def test_yesno_label_matches_the_claim_it_asks_about():
    labels = set()
    for text in (ABSTRACT, NEGATED):
        for sample in range(12):
            task = grounded_task(item(text, "yesno", sample), seed=0)
            closing = split_tail(sentences(text))[1][-1]
            assert task["response"] == f"{task['label'].capitalize()}. {closing}"
            assert closing not in task["context"]  # the finding must be inferred, not looked up
            claim = task["template"].removeprefix("Based on this study, is it true that ").removesuffix("?")
            stated = closing.removeprefix("In conclusion, ").rstrip(".")
            stated = stated[0].lower() + stated[1:]
            assert claim == (stated if task["label"] == "yes" else flip_claim(stated))
            labels.add(task["label"])
    assert labels == {"yes", "no"}  # a seeded coin per task: both labels occur


def test_span_answer_is_in_the_sentence_it_blanks():
    for sample in range(6):
        task = grounded_task(item(ABSTRACT, "span", sample), seed=3)
        blanked = task["template"].split('"')[1]
        assert blanked.replace("___", task["response"]).rstrip(".") in ABSTRACT
        assert task["response"][0].isdigit() and task["context"] == ABSTRACT


def test_short_passage_is_a_reject_with_its_reason():
    out = grounded_task(item("One sentence. Two sentences.", "conclusion"), seed=0)
    assert isinstance(out, Reject) and "fewer than 4" in out.reason
    assert isinstance(grounded_task(item("No numbers here at all in this text.", "span"), seed=0), Reject)


class NoLLM:
    model_id = "none"

    def generate(self, prompts, sampling, progress=None):
        if prompts:
            raise AssertionError("grounded tasks must not call the model")
        return []


def test_run_builds_grounded_rows_without_the_model_and_keeps_rejects(tmp_path):
    passages = tmp_path / "passages.jsonl"
    lines = [{"id": "a", "text": ABSTRACT}, {"id": "b", "text": NEGATED}, {"id": "c", "text": "Too short. Really."}]
    passages.write_text("".join(json.dumps(x) + "\n" for x in lines))
    counts = run_bonito(passages, tmp_path / "out", NoLLM(), task_types=("conclusion", "yesno", "span"),
                        progress=False)
    rows = read_shards(tmp_path / "out" / "examples")
    metas = [json.loads(m) for m in rows["meta"]]
    assert {m["generator"] for m in metas} == {"grounded"} and counts["generated"] == 0
    assert sorted(m["task_type"] for m in metas) == ["conclusion", "conclusion", "span", "span", "yesno", "yesno"]
    assert all(r.startswith("grounded(") for r in rows["source"])
    rejects = read_rejects(tmp_path / "out" / "generated")
    assert counts["rejects"] == len(rejects) == 3 and {r["text_id"] for r in rejects} == {"c"}
    again = run_bonito(passages, tmp_path / "out", NoLLM(), task_types=("conclusion", "yesno", "span"),
                       progress=False)
    assert again["shards"]["skipped_shards"] == again["shards"]["shards"]  # resumed: nothing rebuilt
