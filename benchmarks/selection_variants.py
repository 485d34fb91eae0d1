"""benchmarks.selection's variant arms (issue 22): one extra forward pass, then score columns.

The pipeline's prior/full pass returns plain mean poolings only, so this benchmark runs its own pass
(the same chat prompt, truncation and weights; the decoder body only, no LM head) over the target
rows and the pool, and keeps per row:
* ``rds``: RDS+'s position-weighted mean of the last hidden state over the whole sequence;
* ``layers``: the same pooling of every layer, concatenated, times a Rademacher matrix (CRDS-R);
* ``response``: the plain mean over the response tokens (the default target_sim's, re-derived here
  for whitening and density; checked against the score column);
* ``length``: response tokens after truncation (the length-aware arms).

Columns (selectors/target_sim_variants.py has the formulas), all larger-is-better, ranked by a
top_k at the benchmark's fraction:
``score_rds`` (cosine, RDS+ pooling), ``score_crds_w`` (cosine after PCA whitening of the rds
embeddings on the pool), ``score_crds_r`` (cosine of projected all-layer embeddings),
``score_ts_len`` (default target_sim with a length penalty), ``score_ts_lenmatch`` (default
target_sim within target-length quotas), ``score_rrf`` (rank fusion of default target_sim and
CoLoR-sum), ``score_ts_density`` (default target_sim minus a kNN-density penalty).
"""

from __future__ import annotations

import numpy as np
import polars as pl
import torch
from instruct_selectors.color_filter import color_k
from instruct_selectors.scores.base import build_request
from instruct_selectors.steps.top_k import reciprocal_rank_fusion
from instruct_selectors.target_sim_variants import (
    apply_whitening,
    density_penalised,
    fit_whitening,
    knn_density,
    length_matched_top,
    length_penalised,
    position_weight_matrix,
    rademacher_projection,
    target_sim_in,
)

from pipelines.llm.nll import encode, plan_batches

VARIANT_ARMS = {  # arm -> column
    "rds": "score_rds", "crds_w": "score_crds_w", "crds_r": "score_crds_r", "ts_len": "score_ts_len",
    "ts_lenmatch": "score_ts_lenmatch", "rrf": "score_rrf", "ts_density": "score_ts_density",
}


@torch.inference_mode()
def embed(model, tok, table: pl.DataFrame, max_tokens: int, token_budget: int, proj_dim: int,
          seed: int = 0) -> dict[str, np.ndarray]:
    """rds, layers (projected to ``proj_dim``), response and length per row of ``table``."""
    items = [encode(tok, build_request("full", i, c, r), max_tokens)
             for i, c, r in table.select("instruction", "context", "response").iter_rows()]
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    body, device = model.get_decoder(), next(model.parameters()).device
    cfg = model.config
    proj = torch.tensor(rademacher_projection(cfg.num_hidden_layers * cfg.hidden_size, proj_dim, seed),
                        dtype=torch.float32, device=device)
    out = {"rds": [None] * len(items), "layers": [None] * len(items), "response": [None] * len(items)}
    for batch in plan_batches([it.length for it in items], token_budget):
        width = max(items[i].length for i in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            seq = items[i].prompt_ids + items[i].completion_ids
            ids[row, : len(seq)], mask[row, : len(seq)] = torch.tensor(seq), 1
        states = body(input_ids=ids.to(device), attention_mask=mask.to(device), output_hidden_states=True).hidden_states
        w = torch.tensor(position_weight_matrix([items[i].length for i in batch], width), dtype=torch.float32,
                         device=device)
        # hidden_states[0] is the embedding layer's output; the rest one per decoder layer.
        pooled = torch.stack([torch.einsum("bt,btd->bd", w, h.float()) for h in states[1:]], dim=1)
        projected = pooled.flatten(1) @ proj
        last = states[-1].float()
        for row, i in enumerate(batch):
            p, n = len(items[i].prompt_ids), items[i].length
            out["rds"][i] = pooled[row, -1].cpu().numpy()
            out["layers"][i] = projected[row].cpu().numpy()
            out["response"][i] = last[row, p:n].mean(0).cpu().numpy()
    emb = {k: np.stack(v).astype(np.float64) for k, v in out.items()}
    emb["length"] = np.array([len(it.completion_ids) for it in items])
    return emb


def variant_columns(scored: pl.DataFrame, pool: dict, target: dict, sim_column: str, fraction: float, *,
                    whiten_dim: int = 128, length_strength: float = 0.5, density_strength: float = 0.5,
                    density_k: int = 10) -> dict[str, np.ndarray]:
    """The variant score columns for the scored pool (``sim_column``: the default target_sim)."""
    sim = scored[sim_column].cast(pl.Float64).fill_null(np.nan).to_numpy()
    again = target_sim_in(pool["response"], target["response"])
    gap = float(np.nanmax(np.abs(again - sim)))
    if sim_column.endswith("_response") and gap > 1e-3:  # same model, prompt and pooling: must agree
        print(f"  warning: re-derived target_sim differs from {sim_column} by up to {gap:.2g}", flush=True)
    mean, w = fit_whitening(pool["rds"], dim=min(whiten_dim, len(pool["rds"]) - 1))
    k = color_k(len(sim), fraction=fraction)
    return {
        "score_rds": target_sim_in(pool["rds"], target["rds"]),
        "score_crds_w": target_sim_in(apply_whitening(pool["rds"], mean, w), apply_whitening(target["rds"], mean, w)),
        "score_crds_r": target_sim_in(pool["layers"], target["layers"]),
        "score_ts_len": length_penalised(sim, pool["length"], target["length"], length_strength),
        "score_ts_lenmatch": length_matched_top(sim, pool["length"], target["length"], k),
        "score_rrf": reciprocal_rank_fusion(sim, scored["score_color_sum"].cast(pl.Float64).fill_null(np.nan).to_numpy()),
        "score_ts_density": density_penalised(sim, knn_density(pool["response"], density_k), density_strength),
    }


def length_window_ranking(scored: pl.DataFrame, columns: list[str], target_chars, widen: float = 2.0) -> np.ndarray:
    """Issue 34's form-aware candidate: the rank fusion of ``columns`` (the default's), rows whose
    response length lies in the target's own range first (its 10th-90th percentile of characters,
    widened ``widen`` times each way), the rest after them: the default's picks run 1-3 tokens
    whatever the target's answers are. Lengths in characters (the ``longest`` column)."""
    values = [scored[c].cast(pl.Float64).fill_null(np.nan).to_numpy() for c in columns]
    fused = reciprocal_rank_fusion(*values) if len(values) > 1 else values[0]
    fused = (fused - np.nanmin(fused)) / max(float(np.nanmax(fused) - np.nanmin(fused)), 1e-12)  # in [0, 1]
    low, high = np.quantile(np.asarray(target_chars, dtype=np.float64), [0.1, 0.9])
    chars = scored["response_chars"].to_numpy()
    inside = (chars >= low / widen) & (chars <= high * widen)
    return np.where(inside, fused + 2.0, fused)  # every row inside the range outranks every row outside
