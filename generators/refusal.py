"""R-Tuning's refusal-aware data (Zhang et al. 2023): split rows by whether the model already knows
the answer, and teach it to say so.

A transform (rows in, the same rows changed out), kept with the generators: it asks a model like
they do and sits in the same layer. The method's strings, judge and evaluation are in
``refusal_certainty.py``.

Every row is asked of the model (greedy, batched through the backend); its answer is judged
against the row's response by exact match or token F1 (SQuAD normalisation, ``threshold``). Then

* ``response`` = the original response + "\\n\\nAre you sure you accurately answered the question
  based on your internal knowledge?" + " I am sure." (known) or " I am unsure." (unknown);
* ``response_original`` = the response as it was; ``refusal_answer`` = the model's greedy answer;
  ``refusal_score`` = its exact/F1 score;
* ``meta.known`` = whether the model got it right.

``id`` is left as it was: it names the example the row came from, so a transformed row can be
traced back to its scores and selection. A row whose reference is empty once normalised (nothing
to compare with, e.g. a response of "...") is a reject with that reason, and so is a row whose
request failed for good (an endpoint that keeps failing); both are kept in the shard's
``rejects-*.jsonl``. Work goes shard by shard through :func:`pipelines.shards.run_sharded`, so a
killed run redoes only the missing shards.

    python -m generators.refusal runs/<run>/selected/all.parquet runs/refusal --model tiny
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import polars as pl

from generators.parsing import Reject, generate_parsed
from generators.refusal_certainty import METRICS, is_correct, question_prompt, score_answer, with_certainty
from pipelines.llm.base import LLM, Sampling
from pipelines.progress import StageBar
from pipelines.qa_metrics import normalize_answer
from pipelines.schema import meta_of, with_meta_field
from pipelines.shards import read_rejects, read_shards, run_sharded, write_shards


def transform_rows(
    table: pl.DataFrame, llm: LLM, *, metric: str = "f1", threshold: float = 0.5, max_tokens: int = 64
) -> tuple[pl.DataFrame, list[dict[str, Any]]]:
    """One table of rows -> (the refusal-aware rows, rejects). Pure apart from the LLM call."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}: use one of {METRICS}")
    for column in ("instruction", "context", "response", "meta"):
        if column not in table.columns:
            raise ValueError(f"refusal_aware: the rows have no {column!r} column (columns: {table.columns})")
    empty = [not normalize_answer(r or "") for r in table["response"].to_list()]
    rejects = [
        {"id": row.get("id"), "field": "response", "reason": "reference answer is empty after normalisation",
         "response": row["response"]}
        for row, bad in zip(table.iter_rows(named=True), empty, strict=True) if bad
    ]
    rows = table.filter(~pl.Series(empty, dtype=pl.Boolean)) if any(empty) else table
    # Through generate_parsed (no re-asks): a request that failed for good is a reject of its row.
    got = generate_parsed(llm, list(rows.iter_rows(named=True)), lambda r: question_prompt(r["instruction"], r["context"]),
                          lambda text, _: text, Sampling(temperature=0.0, max_tokens=max_tokens), retries=0).results
    failed = [isinstance(a, Reject) for a in got]
    rejects += [a.to_dict(id=r["id"], field="") for a, r in zip(got, rows.iter_rows(named=True), strict=True)
                if isinstance(a, Reject)]
    if any(failed):
        rows = rows.filter(~pl.Series(failed, dtype=pl.Boolean))
    answers = [a for a in got if not isinstance(a, Reject)]
    refs = rows["response"].to_list()
    scores = [score_answer(a, r, metric) for a, r in zip(answers, refs, strict=True)]
    known = [is_correct(a, r, metric, threshold) for a, r in zip(answers, refs, strict=True)]
    out = rows.with_columns(
        pl.Series("response_original", refs, dtype=pl.Utf8),
        pl.Series("response", [with_certainty(r, k) for r, k in zip(refs, known, strict=True)], dtype=pl.Utf8),
        pl.Series("refusal_answer", answers, dtype=pl.Utf8),
        pl.Series("refusal_score", scores, dtype=pl.Float64),
    )
    return with_meta_field(out, "known", known), rejects


def run_refusal_aware(
    table: pl.DataFrame,
    out_dir: str | Path,
    llm: LLM,
    *,
    metric: str = "f1",
    threshold: float = 0.5,
    max_tokens: int = 64,
    shard_size: int = 64,
    progress: bool = True,
) -> dict[str, Any]:
    """Transform ``table`` into ``out_dir`` shards (skipping shards already there). Returns counts:
    rows_in, rows_out, known, unknown, rejects, reject_reasons, shards, resumed (shards skipped)."""
    bar = StageBar("refusal_aware", table.height, enabled=progress, unit="row")
    def process(indices):
        return transform_rows(table.slice(indices[0], len(indices)), llm, metric=metric,
                              threshold=threshold, max_tokens=max_tokens)

    try:
        with bar.active():
            outcomes = run_sharded(range(table.height), Path(out_dir), shard_size, process, progress=bar)
    finally:
        bar.close()
    if not outcomes:  # no rows: one empty shard, so the schema (extra columns too) survives
        write_shards(transform_rows(table, llm, metric=metric, threshold=threshold)[0], Path(out_dir), shard_size)
    done = read_shards(out_dir)
    known = sum(bool(meta_of(m).get("known")) for m in done["meta"].to_list()) if done.height else 0
    rejects = read_rejects(out_dir)
    reasons: dict[str, int] = {}
    for r in rejects:
        reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
    return {
        "rows_in": table.height,
        "rows_out": done.height,
        "known": known,
        "unknown": done.height - known,
        "rejects": len(rejects),
        "reject_reasons": reasons,
        "shards": len(outcomes),
        "resumed": sum(o.skipped for o in outcomes),
    }


def main(argv: list[str] | None = None) -> int:
    from pipelines.io import read_examples
    from pipelines.llm import make_backend, resolve_backend_name

    ap = argparse.ArgumentParser(prog="python -m generators.refusal", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("rows", help="rows to transform (any format pipelines.io reads)")
    ap.add_argument("out_dir", help="folder for the transformed shards and rejects")
    ap.add_argument("--backend", default="auto", help="LLM backend (default: auto)")
    ap.add_argument("--model", default="embedded", help="model (default: the embedded SmolLM2)")
    ap.add_argument("--metric", choices=METRICS, default="f1", help="how an answer is judged correct")
    ap.add_argument("--threshold", type=float, default=0.5, help="score >= this counts as known")
    ap.add_argument("--max-tokens", type=int, default=64, help="tokens per greedy answer")
    ap.add_argument("--shard-size", type=int, default=64, help="rows per shard (unit of resume)")
    args = ap.parse_args(argv)
    table = read_examples(args.rows).table
    llm = make_backend(resolve_backend_name(args.backend), args.model)
    counts = run_refusal_aware(table, args.out_dir, llm, metric=args.metric, threshold=args.threshold,
                               max_tokens=args.max_tokens, shard_size=args.shard_size)
    print(counts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
