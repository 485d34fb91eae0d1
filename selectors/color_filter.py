"""CoLoR-Filter (arXiv 2406.10670): keep the rows whose loss drops most under a target-tuned model.

    score_color(x) = L_prior(x) - L_cond(x)

each L the NLL of the response tokens under ``reduction``: ``"sum"`` (default), the total =
-log p(response), so the score is log p(resp|θ_cond) - log p(resp|θ_prior), the paper's quantity
for whole sequences; or ``"mean"``, the per-token mean. θ_cond is the prior
fine-tuned for one epoch on a small user-given target set (LoRA by default, ``method="full"`` as
an option). Selection keeps the *largest* scores, globally: k = floor(N / τ) (τ = candidates per
selected example; the paper sweeps 7..64) or a given k / fraction -- a ``top_k`` step in
policies.py, with :func:`color_k` as the one place the k rule lives.

Build (or reuse) the conditional model, then score with the shared plan:

    path = build_conditional("embedded", target_table, cache_dir="runs/cond")
    cond = HFBackend.load(path)
    scored = score.score_table(pool, prior, scores=("color",), cond_llm=cond)

The folder is named by a fingerprint of (prior identity, target rows, settings), so the second
call with the same inputs returns at once without training.

Why the sum, and why CoLoR is not the pipeline's default ranking (``benchmarks.selection``)
-----------------------------------------------------------------------------------------
The paper's rows all had 512 tokens, so mean and sum ranked alike there; SFT rows vary from 1 to
hundreds of response tokens. The mean difference of two models' losses is noisiest on 1-3-token
answers, so the mean put those first: on both targets CoLoR-mean's 10% had a median response of
1 token (sentiment, qualitative reasoning labels) and trained a worse model than random rows.
The sum weighs a row by how much the target-tuned model gains on it in total, the paper's
whole-sequence quantity, and beat the mean on every target, so it is the default reduction.

Measured on an H200 (``--device cuda --pool-rows 2000 --steps 100 --max-tokens 256 --batch-size 8
--seeds 3``; the embedded SmolLM2-135M as prior and fine-tuned model; held-out target loss after
LoRA on each 10% pick, lower is better):

| target | base | CoLoR-mean | CoLoR-sum | target_sim | random 10% (3 seeds) | random 30% | whole pool |
|---|---|---|---|---|---|---|---|
| dialogue_summarization | 2.498 | 3.251 | **2.203** | 2.278 | 2.570 (2.465-2.680) | 2.365 | 2.250 |
| adversarial_qa | | 4.094 | 3.052 | **2.546** | | | |

(The QA row's run was cut at the device's time limit after these three arms.) The default command
on 2 CPU cores (``python -m benchmarks.selection``: pool 500, 16 steps, 192 tokens, 3 seeds)
ran every arm on both targets:

| target | base | CoLoR-mean | CoLoR-sum | target_sim | random 10% (3 seeds) | random 30% | whole pool |
|---|---|---|---|---|---|---|---|
| dialogue_summarization | 2.588 | 2.950 | 2.504 | **2.472** | 2.631 (2.581-2.720) | 2.665 | 2.713 |
| adversarial_qa | 4.260 | 3.392 | 3.025 | **2.861** | 3.075 (3.027-3.169) | 3.072 | 3.113 |

QA exact match / F1 of greedy answers: target_sim 0.100 / 0.163, CoLoR-sum 0.050 / 0.108, random
10% 0.05-0.083 / 0.122-0.147, whole pool 0.050 / 0.159. CoLoR-sum won the summarisation
target on the H200 (by 0.08, less than random's seed spread), lost it on CPU, and on extractive QA
it picked 2-token labels (qualitative reasoning, commonsense, sentiment) and ended within random's
range. Target similarity (target_sim.py) beat mean random 10% on both targets by more than the
seeds' spread, and the whole pool too, so the pipeline ranks by target_sim by default and keeps
CoLoR-sum as an option (``score.scores`` with ``color``, a ``top_k`` on ``score_color``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

COLUMN = "score_color"
REDUCTIONS = ("mean", "sum")
CACHE_FORMAT = 1  # bump when the way conditional models are built changes
_TRAIN_KWARGS = ("max_steps", "learning_rate", "batch_size", "max_length")


def response_nll(token_nll: np.ndarray, reduction: str = "sum") -> float:
    """One row's L: the mean or the sum of its response-token NLLs; NaN when it has no tokens."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    t = np.asarray(token_nll, dtype=np.float64)
    if t.size == 0:
        return float("nan")
    return float(t.mean() if reduction == "mean" else t.sum())


def color_score(loss_prior: np.ndarray, loss_cond: np.ndarray) -> np.ndarray:
    """Elementwise L_prior - L_cond: positive when the target-tuned model finds the row likelier."""
    return np.asarray(loss_prior, dtype=np.float64) - np.asarray(loss_cond, dtype=np.float64)


def color_k(n: int, tau: float | None = None, k: int | None = None, fraction: float | None = None) -> int:
    """How many rows to keep out of ``n``: floor(n / tau), or k, or floor(n * fraction) (exactly one)."""
    given = [x is not None for x in (tau, k, fraction)]
    if sum(given) != 1:
        raise ValueError("give exactly one of tau, k, fraction")
    if tau is not None:
        if tau < 1:
            raise ValueError(f"tau (candidates per selected row) must be >= 1, got {tau}")
        return int(np.floor(n / tau))
    if k is not None:
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        return min(int(k), n)
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    return int(np.floor(n * fraction + 1e-9))


def prior_identity(prior_model_id: str) -> str:
    """A string that changes when the prior's weights change, without loading the model."""
    if prior_model_id == "embedded":
        from pipelines.llm.embedded import embedded_gguf

        gguf = embedded_gguf()
        return f"embedded:{gguf.name}:{gguf.stat().st_size}"
    path = Path(prior_model_id)
    if path.is_dir():
        h = hashlib.sha256()
        for f in sorted(path.iterdir()):
            if f.name == "config.json":
                h.update(f.read_bytes())
            elif f.suffix in (".safetensors", ".bin"):
                h.update(f"{f.name}:{f.stat().st_size}:{int(f.stat().st_mtime)}".encode())
        return f"dir:{path.resolve()}:{h.hexdigest()[:16]}"
    return prior_model_id  # "tiny" or a hub id


def target_hash(target_table: pl.DataFrame) -> str:
    """Content hash of the target rows, independent of their order (rows are sorted by id)."""
    h = hashlib.sha256()
    for row in target_table.select("id", "instruction", "context", "response").sort("id").iter_rows():
        h.update(json.dumps(row, ensure_ascii=False).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def fingerprint(prior_model_id: str, target_table: pl.DataFrame, settings: dict[str, Any]) -> str:
    payload = {
        "format": CACHE_FORMAT,
        "prior": prior_identity(prior_model_id),
        "target": target_hash(target_table),
        "settings": settings,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _train_conditional(
    model, tokenizer, table: pl.DataFrame, method: str, epochs: float, seed: int, opts: dict
):
    """Fine-tune ``model`` on the target rows with the project's trainer; returns the trained model."""
    from pipelines.finetune import train_model

    kwargs = {k: opts.pop(k) for k in _TRAIN_KWARGS if k in opts}
    model, _metrics = train_model(
        model, tokenizer, table, method=method, epochs=epochs, seed=seed, options=opts or None, **kwargs
    )
    return model


def build_conditional(
    prior_model_id: str,
    target_table: pl.DataFrame,
    cache_dir: str | os.PathLike,
    method: str = "lora",
    epochs: float = 1,
    seed: int = 0,
    **opts: Any,
) -> Path:
    """Path of the conditional model folder (prior + one epoch on the target rows), built once per fingerprint.

    ``opts``: max_steps, learning_rate, batch_size, max_length go to ``train_model`` as arguments,
    anything else as its ``options``. The folder holds a merged, plain transformers model
    (loadable with ``load_model_and_tokenizer(path)``) and ``fingerprint.json`` saying what built it.
    """
    if method not in ("lora", "full"):
        raise ValueError(f"method must be 'lora' or 'full', got {method!r}")
    if target_table.is_empty():
        raise ValueError("the target table is empty: CoLoR-Filter needs a few target rows")
    settings = {"method": method, "epochs": epochs, "seed": seed, "opts": opts}
    fp = fingerprint(prior_model_id, target_table, settings)
    folder = Path(cache_dir) / f"cond-{fp}"
    if (folder / "fingerprint.json").exists():
        return folder

    from pipelines.llm.embedded import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(prior_model_id)
    # Sorted by id so the model depends on the set of target rows, like the fingerprint does.
    model = _train_conditional(model, tok, target_table.sort("id"), method, epochs, seed, dict(opts))
    if hasattr(model, "merge_and_unload"):  # LoRA: fold the adapter in, save a plain model
        model = model.merge_and_unload()
    model.eval()

    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    info = {
        "prior": prior_model_id,
        "prior_identity": prior_identity(prior_model_id),
        "target_rows": target_table.height,
        "target_hash": target_hash(target_table),
        **settings,
    }
    (tmp / "fingerprint.json").write_text(json.dumps(info, indent=2, sort_keys=True, default=str))
    try:
        tmp.rename(folder)  # atomic: a killed build leaves only a .tmp folder behind
    except OSError:  # another process finished first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
