"""Target similarity (RDS+, Ivison et al. 2025, "Large-Scale Data Selection for Instruction Tuning").

    score_target_sim(x) = cos(h(x), mean_t h(t))

h is the prior model's last hidden state, mean-pooled over the row's response tokens
(``pooling="response"``), over the whole sequence (``"all"``), or over the whole sequence with token
i of n weighted i / sum(1..n) (``"weighted"``, RDS+'s own pooling); t runs over the target rows.
Each embedding is L2-normalised before the target mean, so no single long target row dominates
the direction. Keep the *largest*. In RDS+ this cheap score beat most published selection
methods and random selection on pools up to 5.8M rows: the baseline a target-aware score must beat.

The pool's embeddings come from the prior/full pass that already computes CoLoR's L_prior and
IFD's numerator (score.py): no extra forward pass over the pool. The target vector is computed
once per run (:func:`target_embedding`) and handed to every shard.
"""

from __future__ import annotations

import numpy as np
import polars as pl

COLUMN = "score_target_sim"
POOLINGS = ("response", "all", "weighted")
EXTRA = {"response": "hidden_response", "all": "hidden", "weighted": "hidden_weighted"}  # the LossResult.extras key per pooling


def _unit(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float64)
    norms = np.linalg.norm(rows, axis=-1, keepdims=True)
    return rows / np.where(norms > 0, norms, 1.0)


def target_vector(target_embeddings: np.ndarray) -> np.ndarray:
    """The mean of the target rows' unit embeddings (shape: hidden size)."""
    emb = np.asarray(target_embeddings, dtype=np.float64)
    if emb.ndim != 2 or emb.shape[0] == 0:
        raise ValueError("target similarity needs at least one target row embedding")
    return _unit(emb).mean(axis=0)


def target_sim_score(embeddings: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row embedding with the target vector."""
    return _unit(embeddings) @ _unit(target[None, :])[0]


def target_embedding(prior_llm, target_table: pl.DataFrame, pooling: str = "response",
                     with_context: bool = False) -> np.ndarray:
    """The target vector under ``prior_llm``, with the same prompt form as the pool's prior/full pass."""
    return target_vector(target_rows(prior_llm, target_table, pooling, with_context))


def target_form(target_table: pl.DataFrame, with_context: bool) -> pl.DataFrame:
    """The target rows as they are embedded: without their context field unless ``with_context``."""
    return target_table if with_context else target_table.with_columns(context=pl.lit(""))


def target_rows(prior_llm, target_table: pl.DataFrame, pooling: str = "response",
                with_context: bool = False) -> np.ndarray:
    """One pooled embedding per target row, (m, hidden size) float32: what target_vector averages,
    and the target side of otd.py's transport. The same pass as the pool's prior/full pass.

    Without ``with_context`` a target row's context field (its passage, its document) is left out:
    the target stands for the task's form, instruction and answer, not for its documents. A long
    passage otherwise dominates a whole-sequence pooling and pulls rows on the passage's topic
    (benchmarks.selection, adversarial_qa: flows/default_selection.py has the table)."""
    from instruct_selectors.scores.base import build_request

    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    if target_table.is_empty():
        raise ValueError("the target table is empty: target similarity needs a few target rows")
    requests = [build_request("full", i, c, r)
                for i, c, r in target_form(target_table, with_context).select("instruction", "context", "response").iter_rows()]
    results = prior_llm.loss(requests, want_hidden=True)
    return np.stack([r.extras[EXTRA[pooling]] for r in results]).astype(np.float32)
