"""Bonito's ``chat`` prompt mode: any instruct model gets a one-shot example of the task type on a
fixed passage and answers in two labelled lines (``Task:`` / ``Answer:``); a task written without
its answer gets it from a second prompt (:func:`answer_prompt`).

    from generators.bonito_chat import chat_prompt, parse_chat
    messages = chat_prompt(passage, "ynqa")     # worked example, then the real passage
    parsed = parse_chat(reply, item)            # {"template", "response"} or Reject

The run over passages is ``generators/bonito.py``; the ``bonito`` mode is ``bonito_template.py``.
"""

from __future__ import annotations

import re
from typing import Any

from generators.answer_forms import check_form, check_task
from generators.bonito_template import TASK_TYPES, task_type
from generators.parsing import (
    Reject,
    extract_json,
    is_degenerate,
    is_refusal,
    labelled,
    trim_unfinished,
)
from pipelines.llm.base import Messages
from pipelines.schema import normalise_text

EXAMPLE_PASSAGE = (
    "The city museum opens at 9 am and closes at 5 pm. It is free on Sundays, and children under 12 "
    "always enter free. Its largest room shows paintings from the 19th century."
)
# (task, answer) on EXAMPLE_PASSAGE for every task type.
CHAT_EXAMPLES: dict[str, tuple[str, str]] = {
    "exqa": ("What time does the museum close?", "5 pm"),
    "mcqa": (
        "On which day is the museum free for everyone?\nA. Monday\nB. Sunday\nC. Friday\nD. Every day",
        "B. Sunday",
    ),
    "qg": (
        'Write a question whose answer is "children under 12".',
        "Who can always enter the museum for free?",
    ),
    "qa": ("How many hours a day is the museum open?", "Eight hours, from 9 am to 5 pm."),
    "ynqa": ("Do children under 12 have to pay to enter the museum?", "No"),
    "coref": ('In the second sentence, what does "It" refer to?', "The city museum"),
    "paraphrase": (
        "Rewrite the first sentence in other words.",
        "The city museum is open from 9 in the morning until 5 in the afternoon.",
    ),
    "paraphrase_id": (
        'Do these two sentences mean the same? 1: "Children under 12 always enter free." 2: "Young children never pay to get in." Answer yes or no.',
        "Yes",
    ),
    "sent_comp": (
        "Complete the sentence: The largest room of the museum shows ...",
        "paintings from the 19th century.",
    ),
    "sentiment": ("Is the tone of the passage positive, negative or neutral?", "Neutral"),
    "summarization": (
        "Summarize the passage in one sentence.",
        "The city museum is open from 9 to 5, is free on Sundays and for young children, and shows 19th-century paintings.",
    ),
    "text_gen": (
        "Write one sentence that could come next in the passage.",
        "Guided tours of that room start every hour at the main entrance.",
    ),
    "topic_class": ("What is the topic of the passage: sports, culture, science or politics?", "Culture"),
    "wsd": (
        'What does the word "room" mean in the last sentence?',
        "A part of the building with its own walls, here used to show paintings.",
    ),
    "te": ('Does the passage imply that "the museum is open at 7 pm"? Answer yes or no.', "No"),
    "nli": (
        'Does the passage entail, contradict or say nothing about: "The museum opens at noon."?',
        "Contradiction",
    ),
}
CHAT_ASK = (
    "Passage: {passage}\n\nWrite one {full} task that needs this passage, and its answer.\n"
    "Reply in two lines:\nTask: ...\nAnswer: ..."
)
_TASK_LABELS = ("task", "question", "instruction", "q")
_ANSWER_LABELS = ("answer", "response", "a", "correct answer")


def chat_prompt(passage: str, task: str) -> Messages:
    short = task_type(task)
    full = TASK_TYPES[short]
    ex_task, ex_answer = CHAT_EXAMPLES[short]
    return [
        {"role": "user", "content": CHAT_ASK.format(passage=EXAMPLE_PASSAGE, full=full)},
        {"role": "assistant", "content": f"Task: {ex_task}\nAnswer: {ex_answer}"},
        {"role": "user", "content": CHAT_ASK.format(passage=passage.strip(), full=full)},
    ]


ANSWER_ASK = "{task}\n\nPassage: {passage}\n\n{how}"
# What the answer's form is (generators/answer_forms.py checks it), said to the model up front.
_YES_NO_HOW = "Answer with Yes or No only."
ANSWER_HOW = {
    "exqa": "Answer with a short phrase copied from the passage.",
    "ynqa": _YES_NO_HOW,
    "paraphrase_id": _YES_NO_HOW,
    "te": _YES_NO_HOW,
    "mcqa": "Answer with the letter and the text of the correct option.",
    "nli": "Answer with one word: Entailment, Contradiction or Neutral.",
    "sentiment": "Answer with one word: Positive, Negative, Neutral or Mixed.",
    "coref": "Answer with the words of the passage that it refers to.",
    "qg": "Answer with the question only.",
    "topic_class": "Answer with the topic in one or two words.",
}


def answer_prompt(item: dict[str, Any], task: str) -> Messages:
    """Second call, for a task written without its answer: the model answers its own task."""
    how = ANSWER_HOW.get(item["task_type"], "Answer briefly, using the passage.")
    return [{"role": "user", "content": ANSWER_ASK.format(task=task, passage=item["text"].strip(), how=how)}]


def check_answer(answer: str, item: dict[str, Any], raw: str, task: str = "") -> str | Reject:
    """An answer is usable when it is non-empty, does not decline, is not the worked example's
    answer, and has its task type's form (:func:`generators.answer_forms.check_form`: yes/no,
    one of the options, a span of the passage, not the ``task`` repeated...), maybe normalised."""
    answer = re.sub(r"(?i)^\s*[*_]*(?:answer|response)[*_]*\s*[:：][*_]*\s*", "", answer.strip()).strip()
    if not answer:
        return Reject("empty answer", raw)
    if is_refusal(answer):
        return Reject("refusal", raw)
    if is_degenerate(answer):
        return Reject("degenerate repetition", raw)
    answer = trim_unfinished(answer)
    passage = normalise_text(item["text"])
    norm = normalise_text(answer).strip(" .\"'")
    example_answer = normalise_text(CHAT_EXAMPLES[item["task_type"]][1]).strip(" .\"'")
    if norm == example_answer and len(norm.split()) > 1 and norm not in passage:
        return Reject("copies the worked example", raw)
    formed = check_form(item["task_type"], answer, task, item["text"])
    if isinstance(formed, Reject):
        return Reject(formed.reason, raw)
    return formed


def parse_chat(text: str, item: dict[str, Any]) -> dict[str, Any] | Reject:
    """``Task: ...`` / ``Answer: ...`` (labels in any case, markdown allowed; or a JSON object).

    A task without an answer is kept with ``response`` None: :func:`run_bonito` asks for the
    answer in a second call (small models often stop after the first line)."""
    task = labelled(text, _TASK_LABELS, _ANSWER_LABELS)
    answer = labelled(text, _ANSWER_LABELS, _TASK_LABELS + ("passage", "explanation"))
    if task is None:
        data = extract_json(text)
        if isinstance(data, dict):
            task = next((str(data[k]) for k in ("task", "instruction", "question") if data.get(k)), None)
            answer = next((str(data[k]) for k in ("answer", "response", "output") if data.get(k)), None)
    if task is None:
        return Reject("no 'Task:' line", text)
    task = task.strip()
    if len(task.split()) < 3:
        return Reject("task shorter than 3 words", text)
    if normalise_text(task) == normalise_text(CHAT_EXAMPLES[item["task_type"]][0]):
        return Reject("copies the worked example", text)
    if len(normalise_text(task)) > 40 and normalise_text(task) in normalise_text(item["text"]):
        return Reject("task is a copy of the passage", text)
    bad_task = check_task(item["task_type"], task)
    if bad_task is not None:
        return Reject(bad_task.reason, text)
    if answer is None or not answer.strip():
        return {"template": task, "response": None}
    checked = check_answer(answer, item, text, task)
    if isinstance(checked, Reject):
        return checked
    return {"template": task, "response": checked}

