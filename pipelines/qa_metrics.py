"""QA rows and SQuAD-style metrics on strings: no model, no torch.

    exact_match("The Eiffel Tower!", "eiffel tower")   # -> 1.0
    token_f1("in Paris France", "Paris")                # -> 0.5
    qa_fields({"question": "Q?", "answer": "A"})        # -> ("Q?", "", "A")

Normalisation (:func:`normalize_answer`): lower case, no punctuation, no articles (a/an/the),
single spaces. With several gold answers the best one counts. Used by the fine-tuning evaluation
(:mod:`pipelines.finetune.evaluate`) and by the generators that judge a model's answers.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCT)).split())


def _golds(gold: str | Sequence[str]) -> list[str]:
    return [gold] if isinstance(gold, str) else list(gold)


def exact_match(prediction: str, gold: str | Sequence[str]) -> float:
    return float(any(normalize_answer(prediction) == normalize_answer(g) for g in _golds(gold)))


def _f1(prediction: str, gold: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred or not ref:
        return float(pred == ref)  # both empty -> 1, one empty -> 0
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, gold: str | Sequence[str]) -> float:
    return max(_f1(prediction, g) for g in _golds(gold))


def qa_fields(row: Mapping[str, Any]) -> tuple[str, str, Any]:
    """``(question, context, answer)`` of a QA row ({question, context, answer}) or an example row
    ({instruction, context, response}); a missing or empty context is ``""``."""
    if "question" in row:
        return row["question"], row.get("context") or "", row["answer"]
    return row["instruction"], row.get("context") or "", row["response"]
