"""Bonito's task types and its ``bonito`` prompt mode (arXiv 2402.18334): the exact meta-template
a Bonito checkpoint was trained on, and the parser of its ``instruction <|pipe|> response`` answer.

    from generators.bonito_template import bonito_prompt, parse_bonito, task_type
    bonito_prompt(passage, "exqa")   # "<|tasktype|>\nextractive question answering\n<|context|>\n..."

The run over passages is ``generators/bonito.py``; the ``chat`` mode is ``bonito_chat.py``.
"""

from __future__ import annotations

import re
from typing import Any

from generators.answer_forms import check_form, check_task
from generators.grounded import GROUNDED_TYPES
from generators.parsing import Reject, is_refusal

TASK_TYPES: dict[str, str] = {
    "exqa": "extractive question answering",
    "mcqa": "multiple-choice question answering",
    "qg": "question generation",
    "qa": "question answering without choices",
    "ynqa": "yes-no question answering",
    "coref": "coreference resolution",
    "paraphrase": "paraphrase generation",
    "paraphrase_id": "paraphrase identification",
    "sent_comp": "sentence completion",
    "sentiment": "sentiment",
    "summarization": "summarization",
    "text_gen": "text generation",
    "topic_class": "topic classification",
    "wsd": "word sense disambiguation",
    "te": "textual entailment",
    "nli": "natural language inference",
}
PIPE = "<|pipe|>"
CONTEXT = "{{context}}"


def task_type(name: str) -> str:
    """Short name for a short or full task name (case, spaces, hyphens and underscores ignored);
    the grounded types (generators/grounded.py: built from the passage, no LLM) by their short name."""
    key = re.sub(r"[\s_-]+", " ", name.strip().casefold())
    if key in GROUNDED_TYPES:
        return key
    for short, full in TASK_TYPES.items():
        if key in (short.replace("_", " "), full.replace("-", " ")):
            return short
    raise ValueError(
        f"unknown task type {name!r}; choose one of: "
        + ", ".join(f"{s} ({f})" for s, f in {**TASK_TYPES, **GROUNDED_TYPES}.items())
    )


# ---------------------------------------------------------------------------------------------
# Bonito mode


def bonito_prompt(passage: str, task: str) -> str:
    """The exact Bonito meta-template (a raw string: Bonito models are not chat models)."""
    return (
        "<|tasktype|>\n" + TASK_TYPES[task_type(task)] + "\n<|context|>\n" + passage.strip() + "\n<|task|>\n"
    )


def parse_bonito(text: str, item: dict[str, Any]) -> dict[str, Any] | Reject:
    """``instruction <|pipe|> response`` -> (instruction template, response); Reject when the
    pipe is missing, a side is empty, or the response declines."""
    if PIPE not in text:
        return Reject(f"missing {PIPE}", text)
    template, _, response = text.partition(PIPE)
    template, response = template.strip(), response.split(PIPE)[0].strip()
    if not template:
        return Reject("empty instruction", text)
    if not response:
        return Reject("empty response", text)
    if is_refusal(response):
        return Reject("refusal", text)
    task = template.replace(CONTEXT, "").strip()
    bad_task = check_task(task_type(item["task_type"]), task)
    if bad_task is not None:
        return Reject(bad_task.reason, text)
    formed = check_form(task_type(item["task_type"]), response, task, item["text"])
    if isinstance(formed, Reject):
        return Reject(formed.reason, text)
    return {"template": template, "response": formed}
