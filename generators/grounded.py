"""Tasks whose answers are correct by construction: built from a passage's own sentences, no LLM.

A small model writes questions fluently enough but answers them wrongly (issue 35: Bonito's yes/no
labels went unchecked, 26 of 30 extractive answers were not in the passage). These task types take
the answer from the passage first and build the question around it, so the label is known:

* ``conclusion`` -- the structure of an abstract: the context is the passage without its closing
  sentences (the last ~20%% of its characters, one to three sentences), the answer is those
  sentences (findings -> conclusion; PubMedQA's long answer is exactly that).
* ``yesno`` -- a claim check: one closing sentence becomes "is it true that <claim>?". Half the
  tasks (a seeded coin per task) ask about the claim as written (answer Yes), half about the claim
  with its negation flipped: a stated "not"/"no difference" removed, or a "not" put after the
  claim's auxiliary verb (answer No). The answer is the label plus the passage's own sentence. The
  sentence leaves the context, so the finding must be inferred, as in PubMedQA.
* ``span`` -- extractive QA, answer first: a number (with its unit or noun) in a sentence of the
  passage is the answer; the question is that sentence with the number blanked. The passage stays.

A passage or sentence that cannot give a task is a Reject with the reason (kept in the rejects file).

    from generators.grounded import grounded_task
    grounded_task({"text": abstract, "task_type": "yesno", "text_id": "p1", "sample": 0}, seed=0)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from generators.levels import derive_seed
from pipelines.llm.retry import Reject

GROUNDED_TYPES: dict[str, str] = {
    "conclusion": "conclusion from the findings (answer: the passage's closing sentences)",
    "yesno": "yes/no claim check (label known by construction)",
    "span": "extractive span, answer chosen first (a number of the passage)",
}
CONCLUSION_ASKS = (
    "What do these findings suggest?",
    "What can be concluded from this study?",
    "Based on these results, what is the conclusion?",
    "Summarize what this study concludes.",
)
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(])")
_LEAD_IN = re.compile(
    r"^(?:(?:in\s+)?conclusions?\s*[:,]?\s*|overall,\s*|in summary,\s*|taken together,\s*|therefore,\s*"
    r"|(?:these|our|the)\s+(?:results|findings|data)\s+(?:suggest|indicate|show|demonstrate)\s+that\s+"
    r"|this\s+study\s+(?:suggests|indicates|shows|demonstrates)\s+that\s+|we\s+(?:conclude|found)\s+that\s+)",
    re.I,
)
_NEGATION = re.compile(r"\b(?:not|no|never|neither|nor|none|without|cannot|failed|lack)\b|n't\b", re.I)
_AUX = r"is|are|was|were|does|do|did|can|could|has|have|had|should|would|will|may|might|must"
_STRIP = (  # one stated negation, taken out (-> the claim's opposite)
    (re.compile(rf"\b({_AUX})\s+not\b", re.I), r"\1"),
    (re.compile(r"\bno\s+(?=(?:statistically\s+)?significant\b|difference|association|correlation|effect"
                r"|relationship|benefit|change|increase|reduction|improvement|evidence)", re.I), "a "),
)
_INSERT = re.compile(rf"\b({_AUX})\b(?!\s+not\b)", re.I)  # the first auxiliary verb gets a "not"
_SUBORDINATE = re.compile(r"\b(?:who|which|that|when|whether|if|although|while|because)\b", re.I)
_NUMBER = re.compile(r"\b\d+(?:[.,]\d+)?(?:\s*(?:%|percent|patients|cases|participants|subjects|children|women|men"
                     r"|years|months|weeks|days|hours|minutes|mg|kg|ml|mm|cm)\b)?")
_MIN_SENTENCES = 4


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(text.strip()) if s.strip()]


def split_tail(sents: list[str]) -> tuple[list[str], list[str]]:
    """(findings, closing sentences): the fewest last sentences, one to three, holding >= 20% of the characters."""
    total = sum(len(s) for s in sents)
    for k in (1, 2, 3):
        if sum(len(s) for s in sents[-k:]) >= 0.2 * total:
            break
    return sents[:-k], sents[-k:]


def _pick(options: list[Any] | tuple[Any, ...], seed: int, *parts: Any) -> Any:
    return options[derive_seed(seed, *parts) % len(options)]


def flip_claim(clause: str) -> str | None:
    """The clause's opposite (a stated negation taken out, or a "not" put in), or None when it has
    no negation to take out and no auxiliary verb to negate, or more than one negation."""
    negations = len(_NEGATION.findall(clause))
    if negations > 1:
        return None
    if negations == 1:
        for pattern, repl in _STRIP:
            flipped, n = pattern.subn(repl, clause, count=1)
            if n and not _NEGATION.search(flipped):
                return re.sub(r"\ba (?=[aeiou])", "an ", flipped)
        return None
    aux = _INSERT.search(clause)
    if aux is None or _SUBORDINATE.search(clause[: aux.start()]):
        return None  # "patients who were treated ... had" : negating "were" would not flip the claim
    return clause[: aux.end()] + " not" + clause[aux.end():]


def _clause(sentence: str) -> str:
    clause = _LEAD_IN.sub("", sentence.strip()).rstrip(" .!?;:")
    if len(clause) > 1 and not clause[1].isupper():  # keep acronyms: "HIV ..." stays
        clause = clause[0].lower() + clause[1:]
    return clause


def conclusion_task(item: dict[str, Any], seed: int) -> dict[str, Any] | Reject:
    sents = sentences(item["text"])
    if len(sents) < _MIN_SENTENCES:
        return Reject(f"conclusion: passage has {len(sents)} sentences, fewer than {_MIN_SENTENCES}")
    head, tail = split_tail(sents)
    ask = _pick(CONCLUSION_ASKS, seed, "conclusion", item["text_id"], item["sample"])
    return {"template": ask, "response": " ".join(tail), "context": " ".join(head)}


def yesno_task(item: dict[str, Any], seed: int) -> dict[str, Any] | Reject:
    sents = sentences(item["text"])
    if len(sents) < _MIN_SENTENCES:
        return Reject(f"yesno: passage has {len(sents)} sentences, fewer than {_MIN_SENTENCES}")
    head, tail = split_tail(sents)
    claims = [(s, _clause(s)) for s in tail]
    claims = [(s, c, flip_claim(c)) for s, c in claims if len(c.split()) >= 5]
    claims = [x for x in claims if x[2] is not None]
    if not claims:
        return Reject("yesno: no closing sentence whose claim can be flipped (one negation or an auxiliary verb)")
    sentence, clause, flipped = _pick(claims, seed, "yesno-claim", item["text_id"], item["sample"])
    answer_yes = _pick((True, False), seed, "yesno-label", item["text_id"], item["sample"])
    question = f"Based on this study, is it true that {clause if answer_yes else flipped}?"
    rest = [s for s in tail if s != sentence]  # the other closing sentences are findings too
    return {"template": question, "response": f"{'Yes' if answer_yes else 'No'}. {sentence}",
            "context": " ".join(head + rest), "label": "yes" if answer_yes else "no"}


def span_task(item: dict[str, Any], seed: int) -> dict[str, Any] | Reject:
    spots = [(s, m) for s in sentences(item["text"]) for m in _NUMBER.finditer(s)
             if len(s.split()) >= 6 and not re.match(r"\d{4}$", m.group().strip())]  # a year says little
    if not spots:
        return Reject("span: no sentence with a number to ask about")
    sentence, match = _pick(spots, seed, "span", item["text_id"], item["sample"])
    blanked = sentence[: match.start()] + "___" + sentence[match.end():].rstrip()
    return {"template": f'According to the passage, what fills the blank? "{blanked}"',
            "response": match.group().strip(), "context": item["text"]}


_BUILDERS = {"conclusion": conclusion_task, "yesno": yesno_task, "span": span_task}


def grounded_task(item: dict[str, Any], seed: int) -> dict[str, Any] | Reject:
    """The task of ``item["task_type"]`` (one of GROUNDED_TYPES) built from ``item["text"]``:
    ``{"template": instruction, "response", "context"}`` (+ ``label`` for yesno), or a Reject."""
    return _BUILDERS[item["task_type"]](item, seed)


def grounded_rules() -> str:
    """This module's source: part of a generated shard's key, so a changed rule rebuilds its tasks."""
    return Path(__file__).read_text(encoding="utf-8")
