"""CoLoR-Filter: L_prior - L_cond over the response (formula and conditional model in selectors/color_filter.py)."""

from typing import Literal

from instruct_selectors.color_filter import COLUMN, color_score, response_nll
from instruct_selectors.scores.base import Score
from pydantic import BaseModel, ConfigDict


class ColorOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reduction: Literal["mean", "sum"] = "sum"


def _compute(inputs):
    reduction = inputs.options.reduction
    prior, cond = ([response_nll(t, reduction) for t in inputs.passes[name]["token_nll"]]
                   for name in ("prior/full", "cond/full"))
    return color_score(prior, cond)


COLOR = Score(
    name="color", column=COLUMN, compute=_compute, passes=("prior/full", "cond/full"),
    target="conditional_model", options=ColorOptions,
    definition="CoLoR-Filter: response loss under the prior minus under the prior fine-tuned on the "
    "target rows (higher: more target-like)",
)
