"""RDS+ target similarity: cosine of a row's pooled hidden state with the target rows' mean."""

from typing import Literal

import numpy as np
from instruct_selectors.scores.base import Score
from instruct_selectors.target_sim import COLUMN, EXTRA, target_sim_score
from pydantic import BaseModel, ConfigDict


class PoolingOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # weighted: every token, later ones weighted more (RDS+, Ivison et al. 2025; flows/default_selection.py);
    # response: the response tokens' mean; all: the plain mean over every token
    pooling: Literal["response", "all", "weighted"] = "weighted"


def pooled(inputs) -> np.ndarray:
    """The prior/full pass's pooled hidden states, one row per example (the options' pooling)."""
    return np.stack(inputs.passes["prior/full"][EXTRA[inputs.options.pooling]])


def _compute(inputs):
    return target_sim_score(pooled(inputs), np.asarray(inputs.target["target_embedding"]))


TARGET_SIM = Score(
    name="target_sim", column=COLUMN, compute=_compute, passes=("prior/full",), extras=("hidden",),
    target="target_embedding", options=PoolingOptions,
    definition="RDS+: cosine of the row's mean-pooled hidden state with the target rows' mean",
)
