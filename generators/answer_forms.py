"""The form an answer must have for its task type (Bonito's 16 types), checked on strings.

    from generators.answer_forms import check_form
    check_form("ynqa", "Yes, the museum is free on Sundays.", task, passage)   # -> "Yes"
    check_form("ynqa", "The museum is free on Sundays.", task, passage)        # -> Reject
    check_form("mcqa", "B", "Which day?\\nA. Monday\\nB. Sunday", passage)      # -> "B. Sunday"

A small model asked for a yes/no answer often writes a paragraph, and sometimes repeats the
question as its answer; kept as they are, such rows teach the wrong thing. So every answer is
checked against its task type before it becomes a row, and one that fails is a :class:`Reject`
with a fixed reason (retried by :func:`generators.parsing.generate_parsed`, then kept in the
rejects file and counted per reason):

| task type                  | form                                                                |
|----------------------------|---------------------------------------------------------------------|
| every type                 | not the task itself (``"answer repeats the question"``)             |
| ynqa (the task)            | a yes/no question (:func:`check_task`; mcqa: distinct options)      |
| ynqa, paraphrase_id, te    | Yes or No. A leading "Yes"/"No" followed by punctuation or nothing  |
|                            | (``"Yes, because ..."``, ``"No."``) is **normalised to the bare     |
|                            | label**; any other answer (prose, "No one knows") is rejected.      |
| mcqa                       | one of the options the task offers (``A. ...`` lines or inline      |
|                            | ``(A) ...``), by letter or by text; normalised to ``"B. Sunday"``.  |
|                            | A task without at least two options is rejected.                    |
| exqa                       | a span of the passage (:func:`is_span`, case and punctuation aside) |
| coref                      | a short mention (at most 12 words) whose words are in the passage   |
| nli                        | Entailment, Contradiction or Neutral (leading label normalised)     |
| sentiment                  | Positive, Negative, Neutral or Mixed (leading label normalised)     |
| qg                         | a question (ends with "?")                                          |
| summarization              | fewer words than the passage                                        |
| topic_class                | a short label (at most 5 words, "The topic is" taken off)           |
| qa, paraphrase, sent_comp, | no form beyond the common checks (free text)                        |
| text_gen, wsd              |                                                                     |
"""

from __future__ import annotations

import re

from generators.parsing import Reject
from pipelines.schema import normalise_text

YES_NO_TYPES = ("ynqa", "paraphrase_id", "te")
LABELS: dict[str, dict[str, str]] = {
    # task type -> {label word stem (case-folded): the label written in the row}
    "nli": {
        "entail": "Entailment",
        "contradict": "Contradiction",
        "neutral": "Neutral",
        "neither": "Neutral",
    },
    "sentiment": {"positive": "Positive", "negative": "Negative", "neutral": "Neutral", "mixed": "Mixed"},
}
_LEAD = r"^\W*(?:(?:the\s+)?answer\s+is\s*:?\s*)?"
_YES_NO = re.compile(_LEAD + r"(yes|no)(?=\W*$|\s*[,.!;:)\]*_\"'\-\u2013\u2014])", re.I)
_OPTION_LINE = re.compile(r"(?m)^\s*[(\[]?([A-Ha-h])[.):\]]\s+(.+?)\s*$")
_OPTION_INLINE = re.compile(r"(?:^|\s)[(\[]?([A-H])[.)\]]\s+(.+?)(?=\s+[(\[]?[A-H][.)\]]\s|\s*$)")
_ANSWER_LETTER = re.compile(
    r"^\W*(?:(?:the\s+)?(?:correct\s+)?(?:answer|option)\s+is\s*:?\s*)?[(\[]?([A-Ha-h])(?:[.):\]]|\s*$)(.*)$",
    re.S | re.I,
)
_TOPIC_LEAD = re.compile(
    r"^(?:the\s+)?(?:main\s+)?topic(?:\s+of\s+the\s+(?:passage|text))?\s+is\s*:?\s*", re.I
)
_STOP = {"the", "a", "an", "of", "to", "in", "on", "and", "its", "it", "this", "that", "is", "was", "refers"}


def _bare(text: str) -> str:
    return normalise_text(text).strip(" .,;:!?\"'`*_()[]")


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", normalise_text(text))


def is_span(answer: str, passage: str) -> bool:
    """The answer's words occur contiguously in the passage (case, punctuation and quotes
    ignored: '"HDI"' matches '(\u201cHDI\u201d)')."""
    a, p = _words(answer), _words(passage)
    if not a:
        return False
    return f" {' '.join(a)} " in f" {' '.join(p)} "


def repeats_question(answer: str, task: str) -> bool:
    """The answer is the task again (once or more, case and punctuation aside)."""
    a, t = _bare(answer), _bare(task)
    if not a or not t:
        return False
    return a == t or not _bare(a.replace(t, " "))


def options(task: str) -> dict[str, str]:
    """The options a multiple-choice task offers: letter -> text (``A. x`` lines, else inline)."""
    found = {m.group(1).upper(): m.group(2).strip() for m in _OPTION_LINE.finditer(task)}
    if len(found) < 2:
        found = {m.group(1): m.group(2).strip(" ,;") for m in _OPTION_INLINE.finditer(task)}
    return found if len(found) >= 2 else {}


def _mcqa(answer: str, task: str) -> str | Reject:
    offered = options(task)
    if not offered:
        return Reject("multiple-choice task offers no options (A. ... B. ...)")
    m = _ANSWER_LETTER.match(answer.strip())
    if m and m.group(1).upper() in offered:
        letter, rest = m.group(1).upper(), _bare(m.group(2))
        text = _bare(offered[letter])
        if rest and not (rest.startswith(text) or text.startswith(rest)):
            return Reject("multiple-choice answer's letter and text name different options")
        return f"{letter}. {offered[letter]}"
    by_text = [k for k, v in offered.items() if _bare(v) == _bare(answer)]
    if len(by_text) == 1:
        return f"{by_text[0]}. {offered[by_text[0]]}"
    return Reject("multiple-choice answer is not one of the offered options")


def _label(task_type: str, answer: str) -> str | Reject:
    m = re.match(_LEAD + r"(\w+)", answer, re.I)
    word = m.group(1).casefold() if m else ""
    for stem, label in LABELS[task_type].items():
        if word.startswith(stem):
            return label
    return Reject(f"{task_type} answer is not one of: {', '.join(dict.fromkeys(LABELS[task_type].values()))}")


_AUX = (
    r"(?:is|are|was|were|do|does|did|can|could|will|would|should|shall|has|have|had|may|might|must)"
    r"(?:n't|\s+not)?"
)
_YES_NO_QUESTION = re.compile(rf"(?:^|[.!?:;,\n]\s*|\bthat\s+|\bwhether\s+){_AUX}\b[^.?!]*\?", re.I)


def check_task(task_type: str, task: str) -> Reject | None:
    """A Reject when the task itself cannot have its type's answer form, else None: a yes/no task
    (ynqa) must ask a yes/no question (a clause opening with an auxiliary verb and ending in "?",
    or an explicit "yes or no"); a multiple-choice task must offer at least two distinct options."""
    if task_type == "ynqa" and not (
        _YES_NO_QUESTION.search(task) or re.search(r"\byes\s+or\s+no\b", task, re.I)
    ):
        return Reject("yes/no task is not a yes/no question")
    if task_type == "mcqa":
        offered = options(task)
        if not offered:
            return Reject("multiple-choice task offers no options (A. ... B. ...)")
        if len({_bare(v) for v in offered.values()}) < len(offered):
            return Reject("multiple-choice task repeats an option")
    return None


def check_form(task_type: str, answer: str, task: str, passage: str) -> str | Reject:
    """``answer`` in its task type's form (maybe normalised, see the module docstring), or a Reject.

    ``task``: the task as asked (for the echo and multiple-choice checks); ``passage``: its source
    text. Reasons are fixed strings, so the rejects tally by reason."""
    answer = answer.strip()
    if task and repeats_question(answer, task):
        return Reject("answer repeats the question")
    if task_type in YES_NO_TYPES:
        m = _YES_NO.match(answer)
        if m is None:
            return Reject("yes/no answer is not Yes or No")
        return m.group(1).capitalize()
    if task_type == "mcqa":
        return _mcqa(answer, task)
    if task_type in LABELS:
        return _label(task_type, answer)
    if task_type == "exqa" and not is_span(answer, passage):
        return Reject("extractive answer not found in the passage")
    if task_type == "coref":
        words = [w for w in _words(answer) if w not in _STOP]
        if len(_words(answer)) > 12 or not words or not set(words) <= set(_words(passage)):
            return Reject("coreference answer is not a mention from the passage")
    if task_type == "qg" and not answer.rstrip(" \"'*_").endswith("?"):
        return Reject("question generation answer is not a question")
    if task_type == "summarization" and len(_words(answer)) >= len(_words(passage)):
        return Reject("summary is not shorter than the passage")
    if task_type == "topic_class":
        answer = _TOPIC_LEAD.sub("", answer).strip().rstrip(".")
        if not answer or len(answer.split()) > 5:
            return Reject("topic answer is not a short label")
    return answer
