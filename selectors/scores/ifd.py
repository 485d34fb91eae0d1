"""IFD, instruction-following difficulty (Cherry LLM, "From Quantity to Quality").

    IFD(x) = L(response | instruction) / L(response alone)

each L the mean per-token NLL over the response tokens. "instruction" is the whole user turn
(instruction plus its context, rendered with the model's own chat template -- an unfamiliar
template pushes every score above 1); "alone" conditions only on the model's start token.
Values > 1 mean the instruction does not help: drop them, then keep the highest, e.g.

    select(table, [{"threshold": {"column": "score_ifd", "max": 1.0}},
                   {"top_k": {"column": "score_ifd", "fraction": 0.1}}])

Not to be confused with Superfiltering's exp(L_cond - L_direct), a different ranking.
The losses come from the shared scoring pass (score.py); this file only holds the formula.
"""

from __future__ import annotations

import numpy as np
from instruct_selectors.scores.base import Score

COLUMN = "score_ifd"


def ifd_score(loss_given_instruction: np.ndarray, loss_alone: np.ndarray) -> np.ndarray:
    """Elementwise L(resp | instruction) / L(resp alone); NaN where the denominator is 0 or NaN."""
    num = np.asarray(loss_given_instruction, dtype=np.float64)
    den = np.asarray(loss_alone, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = num / den
    out[~np.isfinite(out)] = np.nan
    return out


def _compute(inputs):
    return ifd_score(inputs.passes["prior/full"]["loss"], inputs.passes["prior/alone"]["loss"])


IFD = Score(
    name="ifd", column=COLUMN, compute=_compute, passes=("prior/full", "prior/alone"),
    definition="IFD: response loss with the instruction / without it (above 1: the instruction does not help)",
)
