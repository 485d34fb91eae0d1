"""Context dependency, the paper's user attention ratio (probe model with eager attention).

Read from the prior's own pass unless a separate probe model is given (then the probe/full pass)."""

from instruct_selectors.context_dependency import ATTN_COLUMN
from instruct_selectors.scores.base import Score
from pydantic import BaseModel, ConfigDict


class AttnOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    layer: int | None = None  # None: about two thirds of the probe's depth


def _compute(inputs):
    return inputs.passes.get("probe/full", inputs.passes["prior/full"])["attn"]


CTX_ATTN = Score(
    name="ctx_attn", column=ATTN_COLUMN, compute=_compute, passes=("prior/full",), extras=("attn",),
    options=AttnOptions,
    definition="context dependency: share of the response's attention that goes to the context tokens",
)
