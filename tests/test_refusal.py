"""R-Tuning's refusal-aware transform: judging, the certainty suffix, resume by shard, the stage on
the tiny model, and the evaluation's answered accuracy / unsure share."""

from __future__ import annotations

import json

import polars as pl
import pytest

from generators.refusal import run_refusal_aware, transform_rows
from generators.refusal_certainty import (
    CERTAINTY_QUESTION,
    SURE,
    UNSURE,
    evaluate_certainty,
    is_correct,
    refusal_eval,
    split_certainty,
    with_certainty,
)
from pipelines.schema import make_example, meta_of, to_table
from pipelines.shards import list_shards


def _fake(fake_llm, answers: dict[str, str], unsure=frozenset(), **options):
    """Greedy answers from a question -> answer dict ("no idea" otherwise); unsure (lower NLL
    for " I am unsure.") where told."""

    def answer(ask):
        assert ask.sampling.temperature == 0.0  # greedy
        return answers.get(ask.text, "no idea")

    def nll(request):
        question = next(q for q in answers if q in request.prompt)
        says_unsure = request.completion == f" {UNSURE}"
        return [0.1 if says_unsure == (question in unsure) else 2.0] * 3

    return fake_llm(answer, losses=nll, **options)


# --------------------------------------------------------------------------- judging
@pytest.mark.parametrize(
    ("prediction", "reference", "metric", "threshold", "expected"),
    [
        ("The Paris.", "paris", "exact", 1.0, True),  # articles, case, punctuation normalised
        ("Paris, France", "Paris", "exact", 1.0, False),
        ("Paris France", "Paris", "f1", 0.5, True),  # F1 = 2*(1/2*1)/(1/2+1) = 0.667
        ("Paris France", "Paris", "f1", 0.7, False),
        ("in the city of Paris France", "Paris", "f1", 0.5, False),  # F1 = 0.33
        ("London", "Paris", "f1", 0.01, False),
        ("yes", ["no", "yes"], "exact", 1.0, True),  # several references: the best counts
    ],
)
def test_is_correct_by_metric_and_threshold(prediction, reference, metric, threshold, expected):
    assert is_correct(prediction, reference, metric, threshold) is expected


def test_bad_metric_or_threshold_is_an_error():
    with pytest.raises(ValueError, match="unknown metric 'bleu'"):
        is_correct("a", "a", "bleu")
    with pytest.raises(ValueError, match="threshold"):
        is_correct("a", "a", "f1", 0.0)


def test_suffix_and_its_parse_round_trip():
    sure, unsure = with_certainty("Paris. ", True), with_certainty("Rome", False)
    assert sure == f"Paris.\n\n{CERTAINTY_QUESTION} {SURE}" and unsure.endswith(f"? {UNSURE}")
    assert split_certainty(sure) == ("Paris.", False)
    assert split_certainty(unsure) == ("Rome", True)
    assert split_certainty("just an answer") == ("just an answer", None)
    # cut off by the token limit while writing the question: the answer still ends where it starts
    assert split_certainty("yes\n\nAre you sure you accur") == ("yes", None)
    assert split_certainty("no.\nAre") == ("no.", None)
    assert split_certainty("Are you sure? I am.") == ("", None)
    assert split_certainty("Mare") == ("Mare", None)  # not the question's start
    assert split_certainty("yes\n\nWhat is your answer?") == ("yes", None)  # the suffix's blank line ends it


# --------------------------------------------------------------------------- the transform
def _rows(n: int = 6) -> pl.DataFrame:
    return to_table(make_example(f"Question {i}?", f"answer {i}", meta={"task_type": "qa"}) for i in range(n))


def test_known_rows_get_sure_unknown_get_unsure_and_original_is_kept(fake_llm):
    table = _rows(4)
    llm = _fake(fake_llm, {"Question 0?": "answer 0", "Question 1?": "The answer 1.", "Question 2?": "answer 7",
                   "Question 3?": "wrong"})
    out, rejects = transform_rows(table, llm, metric="exact", threshold=1.0)
    assert rejects == [] and out.height == 4
    known = [meta_of(m)["known"] for m in out["meta"]]
    assert known == [True, True, False, False]
    assert [meta_of(m)["task_type"] for m in out["meta"]] == ["qa"] * 4  # meta extended, not replaced
    assert out["response_original"].to_list() == table["response"].to_list()
    for row, k in zip(out.iter_rows(named=True), known, strict=True):
        assert row["response"] == with_certainty(row["response_original"], k)
    assert out["id"].to_list() == table["id"].to_list()
    # F1 with a low threshold: "answer 7" shares "answer" with "answer 2" (F1 0.5) -> known
    out_f1, _ = transform_rows(table, llm, metric="f1", threshold=0.5)
    assert [meta_of(m)["known"] for m in out_f1["meta"]] == [True, True, True, False]
    assert out_f1["refusal_score"].to_list()[2] == pytest.approx(0.5)


def test_empty_reference_is_a_reject_with_reason(fake_llm):
    table = to_table([make_example("Q?", "..."), make_example("Question 1?", "answer 1")])
    out, rejects = transform_rows(table, _fake(fake_llm, {"Question 1?": "answer 1"}))
    assert out.height == 1 and len(rejects) == 1
    assert rejects[0]["field"] == "response" and "empty" in rejects[0]["reason"]


def test_a_request_that_fails_for_good_is_a_reject_not_a_crash(fake_llm):
    # Like an endpoint that keeps failing for one prompt (openai backend's generate_results).
    flaky = _fake(fake_llm, {"Question 0?": "answer 0", "Question 2?": "answer 2"},
                  fail=lambda ask: ask.text == "Question 1?")
    out, rejects = transform_rows(_rows(3), flaky)
    assert out["instruction"].to_list() == ["Question 0?", "Question 2?"]
    assert [meta_of(m)["known"] for m in out["meta"]] == [True, True]
    assert len(rejects) == 1 and rejects[0]["reason"] == "llm request failed: HTTP 503"


def test_resume_by_shard_redoes_nothing_and_rebuilds_a_lost_shard(tmp_path, fake_llm):
    table = _rows(7)
    answers = {f"Question {i}?": f"answer {i}" if i % 2 else "no" for i in range(7)}
    first = run_refusal_aware(table, tmp_path, _fake(fake_llm, answers), shard_size=3, progress=False)
    assert first["shards"] == 3 and first["resumed"] == 0 and first["rows_out"] == 7
    assert (first["known"], first["unknown"]) == (3, 4)
    before = {p.name: p.read_bytes() for p in list_shards(tmp_path)}
    untouched = _fake(fake_llm, answers)
    again = run_refusal_aware(table, tmp_path, untouched, shard_size=3, progress=False)
    assert untouched.calls == [] and untouched.loss_calls == []  # no finished shard was redone
    assert again["resumed"] == 3 and {k: again[k] for k in ("known", "unknown")} == {"known": 3, "unknown": 4}
    list_shards(tmp_path)[1].unlink()  # as if killed before shard 1 was written
    llm = _fake(fake_llm, answers)
    run_refusal_aware(table, tmp_path, llm, shard_size=3, progress=False)
    assert len(llm.asks) == 3  # only the lost shard's rows
    assert {p.name: p.read_bytes() for p in list_shards(tmp_path)} == before


# --------------------------------------------------------------------------- the stage (tiny model)
def test_stage_via_flows_stages_on_the_tiny_model(tmp_path):
    from flows.config import load_config
    from flows.lineage import models_per_stage
    from flows.pipeline import STAGE_NAMES, run_stage
    from flows.run_folder import RunFolder
    from pipelines.shards import atomic_write_jsonl

    data = tmp_path / "in.jsonl"
    atomic_write_jsonl([{"instruction": f"What is {i} plus {i}?", "output": f"It is {2 * i}."} for i in range(6)], data)
    cfg = load_config(overrides=[
        "generate.taxonomy.enabled=false", "generate.text.enabled=false", f"generate.inputs=[{data}]",
        "model.model=tiny", "model.backend=hf", "score.scores=[ifd]", "run.shard_size=2",
        f"run.out_dir={tmp_path / 'runs'}", "select.steps=[{top_k: {column: score_ifd, fraction: 0.5}}]",
        "transform.refusal_aware.enabled=true", "transform.refusal_aware.max_tokens=4",
    ])
    run = RunFolder(cfg.run_dir())
    run.claim(cfg.fingerprint(), cfg.model_dump_json())
    run_stage("collect", run, cfg)
    run_stage("score", run, cfg)
    run_stage("select", run, cfg)
    record = run_stage("refusal_aware", run, cfg)
    kept = pl.read_parquet(run.selected).filter(pl.col("keep"))
    assert record["rows_in"] == kept.height == record["rows_out"] == 3
    assert record["known"] + record["unknown"] == 3 and record["resumed"] == 0
    assert json.loads(run.record_path("refusal_aware").read_text())["rows_out"] == 3
    again = run_stage("refusal_aware", run, cfg)
    assert again["resumed"] == again["shards"] == 2
    exported = run_stage("export", run, cfg)
    rows = pl.read_parquet(run.path(exported["outputs"]["parquet"]))
    assert sorted(rows["response_original"].to_list()) == sorted(kept["response"].to_list())
    for row in rows.iter_rows(named=True):
        suffix = SURE if meta_of(row["meta"])["known"] else UNSURE
        assert row["response"] == f"{row['response_original']}\n\n{CERTAINTY_QUESTION} {suffix}"
    assert models_per_stage(cfg, run.records(STAGE_NAMES))["refusal_aware (greedy answers)"]


def test_stage_refuses_when_disabled(tmp_path):
    from flows.config import load_config
    from flows.pipeline import run_stage
    from flows.run_folder import RunFolder

    with pytest.raises(ValueError, match="transform.refusal_aware.enabled=true"):
        run_stage("refusal_aware", RunFolder(tmp_path), load_config())


def test_train_stage_passes_the_refusal_evaluation_as_its_hook(tmp_path, monkeypatch):
    """The core's run_training knows no R-Tuning: the train stage hands it refusal_eval (judged as the
    transform judged) only when the transform is on."""
    import pipelines.finetune
    from flows.config import load_config
    from flows.run_folder import RunFolder
    from flows.stages import train
    from flows.stages.base import StageContext

    seen = []
    monkeypatch.setattr(pipelines.finetune, "run_training", lambda *a, **kw: seen.append(kw) or {})
    # In this process (train.fresh_process=false), so the patched run_training sees the call.
    on = ["train.method=lora", "train.compare=[]", "train.fresh_process=false", "transform.refusal_aware.enabled=true",
          "transform.refusal_aware.metric=exact"]
    exported = {"export": {"stage": "export", "outputs": {"parquet": str(tmp_path / "x.parquet")}}}
    for overrides, folder in ((on, "on"), (on[:3], "off")):
        train.STAGE.run(StageContext(load_config(overrides=overrides), RunFolder(tmp_path / folder), exported))
    assert callable(seen[0]["extra_eval"]) and seen[1]["extra_eval"] is None
    assert "refusal" not in seen[0]


# --------------------------------------------------------------------------- evaluation
def test_evaluation_answered_accuracy_and_unsure_share_on_a_fake_model(fake_llm):
    rows = [{"question": f"Q{i}?", "context": "", "answer": f"a{i}"} for i in range(5)]
    # right on Q0, Q1, Q2; wrong on Q3, Q4. Unsure of Q2 (right) and Q3, Q4 (wrong).
    answers = {"Q0?": "a0", "Q1?": f"a1\n\n{CERTAINTY_QUESTION} {SURE}", "Q2?": "a2", "Q3?": "x",
               "Q4?": f"y\n\n{CERTAINTY_QUESTION} {UNSURE}"}
    llm = _fake(fake_llm, answers, unsure={"Q2?", "Q3?", "Q4?"})
    res = evaluate_certainty(llm, rows, lambda p: f"<user>{p[-1]['content']}<assistant>", metric="exact")
    assert res["n"] == 5
    assert res["accuracy"] == pytest.approx(3 / 5)
    assert res["unsure_share"] == pytest.approx(3 / 5)
    assert res["answered_accuracy"] == pytest.approx(2 / 2)  # Q0, Q1 answered, both right
    assert res["unsure_accuracy"] == pytest.approx(1 / 3)
    assert res["written_unsure"] == 1
    assert [p["answer"] for p in res["predictions"]][:2] == ["a0", "a1"]  # cut at the certainty question
    confidence = [p["confidence"] for p in res["predictions"]]
    assert min(confidence[:2]) > 0.99 and max(confidence[2:]) < 0.01  # P(sure) from the two losses
    # ranked Q0, Q1 (right) then a tie of Q2 (right), Q3, Q4: AP = 2/3 * 1 + 1/3 * 3/5
    assert res["average_precision"] == pytest.approx(2 / 3 + 1 / 5)
    everything_unsure = evaluate_certainty(_fake(fake_llm, answers, unsure=set(answers)), rows, lambda p: str(p))
    assert everything_unsure["answered_accuracy"] is None and everything_unsure["unsure_share"] == 1.0
    all_wrong = evaluate_certainty(_fake(fake_llm, {q: "z" for q in answers}), rows, lambda p: str(p))
    assert all_wrong["accuracy"] == 0.0 and all_wrong["average_precision"] is None  # AP needs both kinds


def test_evaluate_run_reports_refusal_metrics_on_the_tiny_model():
    from pipelines.finetune.evaluate import evaluate_run
    from pipelines.llm.embedded import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer("tiny")
    rows = [{"question": f"What is {i} plus {i}?", "context": "", "answer": str(2 * i)} for i in range(4)]
    m = evaluate_run(model, tok, rows, max_new_tokens=4, extra_eval=refusal_eval("exact", 1.0))
    assert 0.0 <= m["refusal_unsure_share"] <= 1.0 and m["refusal_accuracy"] == m["exact_match"]
    assert "refusal_answered_accuracy" in m
    assert "refusal_unsure_share" not in evaluate_run(model, tok, rows, max_new_tokens=4)
