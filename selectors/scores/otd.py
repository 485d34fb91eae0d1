"""GOT-D: minus each row's dual potential in entropic OT from the pool to the target (selectors/otd.py)."""

import numpy as np
from instruct_selectors.otd import COLUMN, otd_score
from instruct_selectors.scores.base import Score
from instruct_selectors.scores.target_sim import PoolingOptions, pooled


def _compute(inputs):
    return otd_score(pooled(inputs), np.asarray(inputs.target["target_matrix"]))


OTD = Score(
    name="otd", column=COLUMN, compute=_compute, passes=("prior/full",), extras=("hidden",),
    target="target_matrix", options=PoolingOptions,
    definition="GOT-D: minus the row's dual potential in entropic OT from the pool to the target rows' "
    "embeddings (higher: moves the pool towards the target)",
)
