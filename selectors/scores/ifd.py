"""IFD (Cherry LLM): response loss with the instruction / without it (formula in selectors/ifd.py)."""

from instruct_selectors.ifd import COLUMN, ifd_score
from instruct_selectors.scores.base import Score


def _compute(inputs):
    return ifd_score(inputs.passes["prior/full"]["loss"], inputs.passes["prior/alone"]["loss"])


IFD = Score(
    name="ifd", column=COLUMN, compute=_compute, passes=("prior/full", "prior/alone"),
    definition="IFD: response loss with the instruction / without it (above 1: the instruction does not help)",
)
