"""benchmarks.selection's data: the T0 pool, the QA target, and each target's (target, held-out, pool) split.

Target names:
* ``<task_type>`` (e.g. ``dialogue_summarization``): target and held-out rows from that T0 type;
  the type's other rows stay in the pool at their natural rate (the target has kin in the pool).
* ``loto:<task_type>`` (leave one type out): the same, but *every* row of that type leaves the pool,
  so a selector must find the target's kind of data among other tasks' rows.
* ``adversarial_qa``: ../shared/datasets/context_qa/adversarial_qa_parsed.jsonl (question + passage
  -> answer span); the pool drops every T0 row quoting a held-out question (T0 holds the same rows).
* ``pubmedqa``: ../shared/datasets/context_qa/pubmedqa_flat.jsonl (question + abstract -> the
  abstract's conclusion, ~40 words): long answers on a long context, nothing like it in T0.
* ``quoref``: context_qa/quoref_parsed.jsonl (question + separate passage -> a short span; T0 has
  Quoref only as prompts with the passage inside, and loses the rows quoting a held-out question).
* ``alpaca_eval``: instruct_general/alpaca_eval_gpt4_outputs.json (open-ended requests, GPT-4's long
  answers): a chat target with nothing like it in the pool.

Sizes: the held-out set is ``n_eval`` rows where the type has ``n_eval + MIN_TARGET`` rows; the
target set takes what is left, up to ``n_target`` (a 200-row type with n_eval=150: 50 target rows).
"""

from __future__ import annotations

import glob
import random
from pathlib import Path

import polars as pl

from benchmarks.common import read_jsonl, shared_datasets
from pipelines.schema import make_example, meta_field, to_table

QA_TARGET = "adversarial_qa"
PUBMED_TARGET = "pubmedqa"
LOTO = "loto:"
MIN_TARGET = 20  # fewer target rows and the target vector / conditional model is mostly noise


def t0_rows() -> pl.DataFrame:
    """All T0 rows as an example table (prompt -> instruction, completion -> response), unique by id."""
    files = sorted(glob.glob(str(shared_datasets() / "instruct_general" / "t0_selected_combined.part*.jsonl")))
    rows = [
        make_example(r["prompt"], r["completion"], source=r.get("source_dataset", ""),
                     meta={"task_type": r["task_type"], "template": r.get("template", "")})
        for f in files for r in read_jsonl(Path(f))
    ]
    rows = [r for r in rows if r["response"]]  # an empty answer has no tokens to score or train on
    return to_table(rows).unique("id", keep="first", maintain_order=True)


def context_rows(file: str, answer: str, name: str) -> pl.DataFrame:
    """question + context -> ``answer`` rows of a context_qa file, task type ``name``, unique by id."""
    rows = [
        make_example(r["question"], r[answer], context=r["context"], source="context_qa", meta={"task_type": name})
        for r in read_jsonl(shared_datasets() / "context_qa" / file)
    ]
    return to_table(rows).unique("id", keep="first", maintain_order=True)


def chat_rows() -> pl.DataFrame:
    """Open-ended chat requests answered at length (AlpacaEval's 805 instructions, GPT-4's answers)."""
    import json

    path = shared_datasets() / "instruct_general" / "alpaca_eval_gpt4_outputs.json"
    rows = [make_example(r["instruction"], r["output"], source="alpaca_eval", meta={"task_type": CHAT_TARGET})
            for r in json.loads(path.read_text(encoding="utf-8")) if r["output"].strip()]
    return to_table(rows).unique("id", keep="first", maintain_order=True)


CHAT_TARGET = "alpaca_eval"
QUOREF_TARGET = "quoref"
CONTEXT_TARGETS = {  # target name -> its rows (not T0 task types; the QA ones carry a context field)
    QA_TARGET: lambda: context_rows("adversarial_qa_parsed.jsonl", "answer", QA_TARGET),
    PUBMED_TARGET: lambda: context_rows("pubmedqa_flat.jsonl", "long_answer", PUBMED_TARGET),
    # the user's format: question and passage in separate fields, short spans; T0 holds Quoref only
    # with the passage inside the prompt (rows quoting a held-out question leave the pool)
    QUOREF_TARGET: lambda: context_rows("quoref_parsed.jsonl", "answer", QUOREF_TARGET),
    CHAT_TARGET: chat_rows,  # long free-form answers: nothing like them in the pool
}


def task_type(target_name: str) -> str:
    """The T0 task type a target is made of (``loto:summarization`` -> ``summarization``)."""
    return target_name.removeprefix(LOTO)


def sizes(available: int, n_target: int, n_eval: int) -> tuple[int, int]:
    """(target rows, held-out rows) out of ``available``: held-out first, target at least MIN_TARGET."""
    target = min(n_target, max(MIN_TARGET, available - n_eval))
    held = min(n_eval, available - target)
    if held < 1 or target < 1:
        raise SystemExit(f"{available} rows cannot make a target set and a held-out set")
    return target, held


def split(t0: pl.DataFrame, target_name: str, n_target: int, n_eval: int, n_pool: int, seed: int):
    """(target, held-out, pool) for one target; held-out rows never reach the pool."""
    rng = random.Random(seed)
    if target_name in CONTEXT_TARGETS:
        qa = CONTEXT_TARGETS[target_name]()
        order = list(range(qa.height))
        rng.shuffle(order)
        n_t, n_e = sizes(qa.height, n_target, n_eval)
        target, held = qa[order[:n_t]], qa[order[n_t : n_t + n_e]]
        questions = held["instruction"].to_list()
        leaks = t0["instruction"].map_elements(lambda s: any(q in s for q in questions), return_dtype=pl.Boolean)
        rest = [i for i, leak in enumerate(leaks.to_list()) if not leak]
    else:
        kind = task_type(target_name)
        types = meta_field(t0, "task_type").to_list()
        of_type = [i for i, t in enumerate(types) if t == kind]
        if not of_type:
            raise SystemExit(f"no T0 rows of task type {kind!r}")
        rng.shuffle(of_type)
        n_t, n_e = sizes(len(of_type), n_target, n_eval)
        target, held = t0[of_type[:n_t]], t0[of_type[n_t : n_t + n_e]]
        taken = set(of_type if target_name.startswith(LOTO) else of_type[: n_t + n_e])
        rest = [i for i in range(t0.height) if i not in taken]
    pool = t0[sorted(rng.sample(rest, min(n_pool, len(rest))))]
    return target, held, pool
