"""GOT-D: distribution matching by optimal transport (Kang et al. 2024, "Get more for less:
Principled Data Selection for Warming Up Fine-Tuning in LLMs").

    score_otd(x) = -f(x)        f: x's dual potential in OT_eps(candidates, target)

Fine-tuning moves the model from the pre-training distribution towards the data it sees; GOT-D
picks the candidates that move the *candidate* distribution fastest towards the *target* one: the
rows with the most negative gradient of the optimal-transport distance OT(candidates, target) with
respect to their own mass. That gradient is the candidate's dual potential f_i, calibrated by
subtracting the mean (the masses sum to one). A row near target rows that few other candidates
already cover has a low f (cheap to ship, and its mass lowers the distance); a row far from the
target, or in a region the pool already floods, has a high one. Keep the *largest* ``score_otd``.

Geometry: the same mean-pooled last hidden states as target_sim (score.py's prior/full pass, pooled
by its ``pooling`` option), L2-normalised; cost C_ij = 1 - cos(x_i, t_j), in [0, 2]. Uniform masses on
both sides. Entropic regularisation (POT's log-domain Sinkhorn, ``ot.sinkhorn(...,
method="sinkhorn_log", log=True)``) with epsilon = ``epsilon`` x the target's cost scale (the mean
cosine distance between target rows; 1 for a single target row): mean-pooled hidden states are
anisotropic, so raw cosine distances sit in a narrow band whose width depends on the model, and an
absolute epsilon would be either a hard assignment or a plain mean. The default 0.1 keeps the
transport plan sharp (a row's potential is a soft minimum over its few nearest target rows) while
Sinkhorn still converges in a few hundred iterations. As epsilon grows the potential tends to the
mean cosine distance to the target rows, i.e. target_sim without the normalised mean.

Approximation (minibatch OT; the pool never forms one cost matrix, so 100k rows fit in memory):
* the pool is scored shard by shard (score.py runs per examples shard), and a shard larger than
  ``batch_size`` is cut into seeded random batches of at most that size; each batch is its own OT
  problem against the target. Crowding is therefore only seen inside a batch.
* a target set larger than ``batch_size`` is cut the same way into chunks; a batch's potential is
  the mean of its potentials against every chunk.
* Potentials are fixed up to a constant (f + c, g - c). Subtracting the mean of f inside each batch
  (the paper's calibration over the whole pool) would erase every difference *between* batches, so
  the constant is fixed on the target side instead, which is the same in every batch: the target
  potentials g have mean zero under the target's masses. Then mean(f) over a batch is its
  OT_eps(batch, target), a batch nearer the target scores higher overall, and the values of
  different shards compare. The pool-wide mean the paper subtracts is one constant for the whole
  pool: it changes no ranking, so top_k on ``score_otd`` picks what the calibrated gradient picks
  (up to the minibatching above).
Cost: O(n x min(m, batch_size) x iterations) per shard, memory O(batch_size^2).

Measured (benchmarks.selection, CPU shared with two other jobs, one target, one run):
``--targets dialogue_summarization --pool-rows 500 --seeds 3 --arms otd,target_sim,color,random10
--no-whole-pool --big-fraction 0`` (16 LoRA steps, 10% picks): held-out loss otd 2.5052,
target_sim 2.4720, CoLoR-sum 2.5039, random 10% mean 2.6310 (2.5806-2.7202, 3 seeds), base
2.5877: otd_vs_random10=0.9522, otd_vs_target_sim=1.0134. GOT-D beat every random seed but not
target_sim (one split, no seeds for the ranked arms); the QA target was not run.
"""

from __future__ import annotations

import warnings

import numpy as np
from instruct_selectors.scores.base import Score
from instruct_selectors.scores.target_sim import PoolingOptions, pooled

COLUMN = "score_otd"
DEFAULT_EPSILON = 0.1  # entropic regularisation, relative to the target's cost scale (see above)
DEFAULT_BATCH_SIZE = 1024  # rows per side of one OT problem (a 1024 x 1024 float64 cost: 8 MiB)
MAX_ITER = 2000
STOP_THRESHOLD = 1e-7  # Sinkhorn's marginal error
_SCALE_ROWS = 2048  # target rows sampled for the cost scale


def _unit(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float64)
    norms = np.linalg.norm(rows, axis=-1, keepdims=True)
    return rows / np.where(norms > 0, norms, 1.0)


def cosine_cost(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """1 - cos between every row of ``x`` and of ``y`` (rows need not be unit), clipped to [0, 2]."""
    return np.clip(1.0 - _unit(x) @ _unit(y).T, 0.0, 2.0)


def cost_scale(target: np.ndarray, seed: int = 0) -> float:
    """Mean cosine distance between distinct target rows (a seeded sample of them when many);
    1.0 for a single row or identical rows, where there is no scale to measure."""
    t = np.asarray(target, dtype=np.float64)
    if len(t) > _SCALE_ROWS:
        t = t[np.random.default_rng(seed).choice(len(t), _SCALE_ROWS, replace=False)]
    if len(t) < 2:
        return 1.0
    c = cosine_cost(t, t)
    scale = float((c.sum() - np.trace(c)) / (len(t) * (len(t) - 1)))
    return scale if scale > 1e-12 else 1.0


def dual_potentials(cost: np.ndarray, epsilon: float) -> tuple[np.ndarray, np.ndarray]:
    """Entropic OT between uniform masses on the rows and columns of ``cost``: the potentials (f, g).

    Convention: plan P_ij = a_i b_j exp((f_i + g_j - C_ij) / epsilon), so f is the gradient of
    OT_eps with respect to the row masses; the constant is fixed by sum_j b_j g_j = 0."""
    import ot

    n, m = cost.shape
    a, b = np.full(n, 1.0 / n), np.full(m, 1.0 / m)
    # POT warns when it stops at MAX_ITER (the potentials are still usable), and its log also
    # holds u = exp(log u), which may overflow: only log u is read.
    with warnings.catch_warnings(), np.errstate(over="ignore"):
        warnings.filterwarnings("ignore", message=".*did not converge.*")
        _, log = ot.sinkhorn(a, b, cost, epsilon, method="sinkhorn_log", numItermax=MAX_ITER,
                             stopThr=STOP_THRESHOLD, log=True)
    # POT's plan is diag(u) K diag(v) with K = exp(-C / eps): f = eps (log u - log a), same for g.
    f = epsilon * (log["log_u"] - np.log(a))
    g = epsilon * (log["log_v"] - np.log(b))
    shift = float(b @ g)
    return f + shift, g - shift


def _chunks(n: int, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Indices 0..n-1 in seeded random order, cut into near-equal chunks of at most ``size``."""
    if n <= size:
        return [np.arange(n)]
    return np.array_split(rng.permutation(n), -(-n // size))


def otd_score(embeddings: np.ndarray, target: np.ndarray, *, epsilon: float = DEFAULT_EPSILON,
              batch_size: int = DEFAULT_BATCH_SIZE, seed: int = 0) -> np.ndarray:
    """GOT-D's score per candidate row: minus its dual potential against the target rows.

    ``embeddings`` (n, d) candidates, ``target`` (m, d) target rows, same space (not necessarily
    unit). ``epsilon`` is relative to :func:`cost_scale` of the target. Rows with a non-finite
    embedding get NaN. Deterministic for a given input and ``seed``."""
    x = np.asarray(embeddings, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    if t.ndim != 2 or t.shape[0] == 0:
        raise ValueError("score 'otd' needs at least one target row embedding (an (m, d) matrix)")
    if x.ndim != 2 or x.shape[1] != t.shape[1]:
        raise ValueError(f"score 'otd': candidate embeddings {x.shape} and target embeddings {t.shape} "
                         "must be matrices of the same width (same model and pooling)")
    if not np.isfinite(t).all():
        raise ValueError("score 'otd': the target embedding matrix has non-finite values")
    if epsilon <= 0 or batch_size < 1:
        raise ValueError(f"score 'otd': epsilon must be > 0 and batch_size >= 1, got {epsilon}, {batch_size}")
    out = np.full(len(x), np.nan)
    ok = np.flatnonzero(np.isfinite(x).all(axis=1))
    if len(ok) == 0:
        return out
    eps = epsilon * cost_scale(t, seed)
    rng = np.random.default_rng(seed)
    target_chunks = [t[c] for c in _chunks(len(t), batch_size, rng)]
    for batch in _chunks(len(ok), batch_size, rng):
        rows = x[ok[batch]]
        f = np.mean([dual_potentials(cosine_cost(rows, chunk), eps)[0] for chunk in target_chunks], axis=0)
        out[ok[batch]] = -f
    return out


def _compute(inputs):
    return otd_score(pooled(inputs), np.asarray(inputs.target["target_matrix"]))


OTD = Score(
    name="otd", column=COLUMN, compute=_compute, passes=("prior/full",), extras=("hidden",),
    target="target_matrix", options=PoolingOptions,
    definition="GOT-D: minus the row's dual potential in entropic OT from the pool to the target rows' "
    "embeddings (higher: moves the pool towards the target)",
)
