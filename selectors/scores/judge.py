"""LLM judge: a 1-5 rating of helpfulness and correctness (rubric and parsing in selectors/judge.py).

Its model is ``inputs.llm("judge")`` (score.judge: by default the run's own model); answers that
never parse leave a null score and go to the shard's rejects file."""

from instruct_selectors.judge import COLUMN, judge_rows
from instruct_selectors.scores.base import Score, ScoreResult
from pydantic import BaseModel, ConfigDict, Field


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
    definition="LLM judge's 1-5 rating of helpfulness and correctness (rubric in judge.py)",
)
