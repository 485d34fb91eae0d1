"""benchmarks.domain_adapt's data: PubMed abstracts and PubMedQA rows, split by pmid.

The abstracts (../shared/datasets/domain_text/pubmed_abstracts_from_pubmedqa.jsonl) are the same
papers as the PubMedQA rows (context_qa/pubmedqa_flat.jsonl), conclusion included, so the split is
by pmid: the evaluation rows' pmids are drawn first, and no abstract of theirs reaches generation,
DAPT or the target. The target rows (the user's "few rows of the task") come from generation-side
pmids only.

A PubMedQA row is written as the product reads a target row: instruction = the question, context =
the abstract without its conclusion, response = "<Yes|No|Maybe>. <long answer>" (the decision
first, then the conclusion that supports it).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from benchmarks.common import read_jsonl, shared_datasets
from pipelines.schema import make_example

ABSTRACTS = ("domain_text", "pubmed_abstracts_from_pubmedqa.jsonl")
PUBMEDQA = ("context_qa", "pubmedqa_flat.jsonl")
LABELS = ("yes", "no", "maybe")


@dataclass
class DomainSplit:
    passages: list[dict]  # generation side: {"id": pmid, "text": abstract}
    target: list[dict]  # example rows (make_example), generation-side pmids
    evaluation: list[dict]  # example rows, meta.label and meta.long_answer; held-out pmids


def pubmedqa_row(r: dict) -> dict:
    response = f"{r['answer'].capitalize()}. {r['long_answer']}"
    return make_example(r["question"], response, context=r["context"], source="pubmedqa",
                        meta={"pmid": str(r["pmid"]), "label": r["answer"], "long_answer": r["long_answer"]})


def split_by_pmid(n_eval: int, n_target: int, n_passages: int | None, seed: int) -> DomainSplit:
    """Evaluation pmids first (``n_eval`` PubMedQA rows), then ``n_target`` target rows and up to
    ``n_passages`` abstracts (None: all) from the remaining pmids."""
    qa = read_jsonl(shared_datasets().joinpath(*PUBMEDQA))
    abstracts = read_jsonl(shared_datasets().joinpath(*ABSTRACTS))
    order = sorted(qa, key=lambda r: str(r["pmid"]))
    random.Random(seed).shuffle(order)
    if n_eval + n_target > len(order):
        raise SystemExit(f"{len(order)} PubMedQA rows: fewer than --eval-rows + --target-rows")
    held, rest = order[:n_eval], order[n_eval:]
    held_pmids = {str(r["pmid"]) for r in held}
    side = [a for a in sorted(abstracts, key=lambda a: str(a["pmid"])) if str(a["pmid"]) not in held_pmids]
    random.Random(seed + 1).shuffle(side)
    passages = [{"id": str(a["pmid"]), "text": a["text"]} for a in side[:n_passages]]
    return DomainSplit(passages, [pubmedqa_row(r) for r in rest[:n_target]], [pubmedqa_row(r) for r in held])
