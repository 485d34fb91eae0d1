"""Context dependency, loss variant: L(resp | instruction without c) - L(resp | with c)."""

from instruct_selectors.context_dependency import LOSS_COLUMN, ctx_loss_score
from instruct_selectors.scores.base import Score


def _compute(inputs):
    return ctx_loss_score(inputs.passes["prior/no_ctx"]["loss"], inputs.passes["prior/full"]["loss"])


CTX_LOSS = Score(
    name="ctx_loss", column=LOSS_COLUMN, compute=_compute, passes=("prior/full", "prior/no_ctx"),
    definition="context dependency: response loss without the context minus with it",
)
