"""LLM-as-judge: a 1-5 rating of each row's helpfulness and correctness (``score_judge``).

    from instruct_selectors.scores.judge import judge_rows
    judged = judge_rows(table, llm)          # .scores (None where unparseable), .rejects, .calls

In the spirit of AlpaGasus (Chen et al., 2024: a strong model rates each (instruction, input,
response) and rows under a cut are dropped) and DEITA's quality scorer, on a 1-5 scale with the
rubric in :data:`RUBRIC`. Any backend can judge: a stronger model behind ``openai``/``vllm``
(``score.models.judge``: backend, model, base_url) or the embedded one. The answer format is strict: JSON
``{"rating": N}`` or a line ``Rating: N`` with N in 1..5; a backend with constrained decoding is
given the JSON schema. An answer that does not parse is asked again (greedy first, then sampled
with new seeds) at most ``retries`` times (pipelines.llm.retry.generate_parsed, as the generators
do); rows that never parse, or whose request failed for good, keep a null score and go to
rejects with the reason and the raw answer. Higher is better, so ``top_k`` / ``threshold min`` use it directly.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import polars as pl
from instruct_selectors.scores.base import Score, ScoreResult
from pydantic import BaseModel, ConfigDict, Field

from pipelines.llm.base import Messages, Sampling
from pipelines.llm.retry import Reject, generate_parsed
from pipelines.schema import user_content

COLUMN = "score_judge"
RUBRIC = """You are grading one answer written for an instruction-tuning dataset.
Rate how helpful and correct the response is for the instruction (and its input, if any):
5 = correct, complete and directly useful; nothing important missing.
4 = correct and useful, with small omissions or slightly unclear wording.
3 = partly correct or incomplete; useful only with fixes.
2 = mostly wrong, off-topic or unhelpful.
1 = wrong, irrelevant, empty, a refusal, or a copy of the instruction.
Reply with exactly one line: Rating: N   (N is 1, 2, 3, 4 or 5). Write nothing else."""
SCHEMA: dict[str, Any] = {
    "title": "rating", "type": "object", "additionalProperties": False, "required": ["rating"],
    "properties": {"rating": {"type": "integer", "minimum": 1, "maximum": 5}},
}
_RATING = re.compile(r"\brating\**\s*[:=]\s*\**\s*(\d+)(?:\s*/\s*5)?", re.I)
_RAW_CHARS = 500  # how much of a rejected answer the rejects file keeps


def judge_prompt(instruction: str, context: str, response: str) -> Messages:
    task = user_content(instruction, context)
    return [
        {"role": "system", "content": RUBRIC},
        {"role": "user", "content": f"### Instruction\n{task}\n\n### Response\n{response}\n\n"
                                    "Rate the response. Reply with: Rating: N"},
    ]


def parse_rating(text: str) -> int:
    """The rating in a judge's answer; ValueError (with the reason) when the format is not kept."""
    stripped = text.strip()
    try:
        data = json.loads(stripped)
    except json.JSONDecodeError:
        data = None
    if isinstance(data, dict) and "rating" in data:
        found = [data["rating"]]
    else:
        found = [int(m) for m in _RATING.findall(text)]
    if not found:
        raise ValueError("no 'Rating: N' in the answer")
    if len(set(found)) > 1:
        raise ValueError(f"several different ratings {sorted(set(found))}")
    (rating,) = set(found)
    if isinstance(rating, bool) or not isinstance(rating, int) or not 1 <= rating <= 5:
        raise ValueError(f"rating {rating!r} is not an integer from 1 to 5")
    return rating


@dataclass
class Judged:
    """Per row a rating (None when the judge's answer never parsed), the rejects and the calls."""

    scores: list[int | None]
    rejects: list[dict[str, Any]] = field(default_factory=list)
    calls: int = 0
    retried: int = 0

    def column(self) -> pl.Series:
        return pl.Series(COLUMN, [None if s is None else float(s) for s in self.scores], dtype=pl.Float64)


def judge_rows(
    table: pl.DataFrame,
    llm: Any,
    *,
    retries: int = 2,
    max_tokens: int = 24,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> Judged:
    """Rate every row of ``table`` (instruction, context, response, id) through ``llm``.

    Greedy first (the judge's own best answer); a re-ask samples, so it can differ. A request that
    fails for good (an endpoint down) is a reject of its row, like an answer that never parses."""
    rows = list(zip(table["instruction"], table["context"], table["response"], strict=True))
    schema = SCHEMA if getattr(llm, "structured_output", False) else None
    sampling = Sampling(temperature=0.0, top_p=0.95, max_tokens=max_tokens, seed=seed, json_schema=schema)
    res = generate_parsed(llm, rows, lambda r: judge_prompt(*r), lambda text, _: parse_rating(text),
                          sampling, retries=retries, progress=progress, retry_temperature=0.7)
    out = Judged([None if isinstance(r, Reject) else r for r in res.results], calls=res.generated,
                 retried=res.retried)
    for row_id, r in zip(table["id"], res.results, strict=True):
        if isinstance(r, Reject):
            out.rejects.append({**r.to_dict(id=row_id, stage="score", score="judge"),
                                "raw": r.raw[:_RAW_CHARS]})
    return out


class JudgeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    retries: int = Field(2, ge=0)
    max_tokens: int = Field(24, gt=0)


def _compute(inputs):
    o = inputs.options
    judged = judge_rows(inputs.table, inputs.llm("judge"), retries=o.retries, max_tokens=o.max_tokens,
                        seed=inputs.seed)
    return ScoreResult(judged.column().to_list(), judged.rejects)


JUDGE = Score(
    name="judge", column=COLUMN, compute=_compute, models=("judge",), options=JudgeOptions,
    definition="LLM judge's 1-5 rating of helpfulness and correctness (rubric above)",
)
