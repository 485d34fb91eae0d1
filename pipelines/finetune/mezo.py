"""MeZO: memory-efficient zeroth-order fine-tuning (forward passes only, SPSA with the seed trick).

One step on a batch, with a fresh random seed ``s``:
    theta += eps*z(s);   L+ = loss(theta)
    theta -= 2*eps*z(s); L- = loss(theta)
    theta += eps*z(s)    (restored)
    theta -= lr * g * z(s),  g = (L+ - L-) / (2*eps)   (the restore and update share one pass)
``z(s)`` is never stored: it is regenerated parameter by parameter from ``s`` each time it is
needed, so memory stays at inference level (weights + one parameter-sized noise tensor). No
backward pass runs and no ``.grad`` is ever allocated.

The loop is our own (Trainer assumes a backward pass). It is used by
:func:`pipelines.finetune.train.train_model` with ``method="mezo"``.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader


def _params(model: nn.Module) -> list[torch.nn.Parameter]:
    # Deduplicated (tied embeddings are one tensor) and in a fixed order, so z(s) is reproducible.
    return list({id(p): p for p in model.parameters()}.values())


@torch.no_grad()
def perturb(params: Sequence[torch.Tensor], seed: int, scale: float) -> None:
    """theta += scale * z(seed), z ~ N(0, I), generated one parameter at a time."""
    gen = torch.Generator(device=params[0].device).manual_seed(seed)
    for p in params:
        z = torch.randn(p.shape, generator=gen, device=p.device, dtype=p.dtype)
        p.add_(z, alpha=scale)


@torch.no_grad()
def _loss(model: nn.Module, batch: dict) -> float:
    return float(model(**batch).loss)


@torch.no_grad()
def mezo_step(
    model: nn.Module,
    params: Sequence[torch.Tensor],
    batch: dict,
    seed: int,
    lr: float,
    eps: float,
    weight_decay: float = 0.0,
) -> float:
    """One SPSA step on ``batch``; returns the mean of the two perturbed losses."""
    perturb(params, seed, eps)
    loss_plus = _loss(model, batch)
    perturb(params, seed, -2 * eps)
    loss_minus = _loss(model, batch)
    projected_grad = (loss_plus - loss_minus) / (2 * eps)
    # Restore (+eps*z) and update (-lr*g*z) in one pass over the same z: one noise draw fewer per step.
    gen = torch.Generator(device=params[0].device).manual_seed(seed)
    for p in params:
        z = torch.randn(p.shape, generator=gen, device=p.device, dtype=p.dtype)
        p.add_(z, alpha=eps)
        if weight_decay and p.ndim > 1:
            p.mul_(1 - lr * weight_decay)
        p.add_(z, alpha=-lr * projected_grad)
    return (loss_plus + loss_minus) / 2


def train_mezo(
    model: nn.Module,
    dataset,
    collator,
    *,
    batch_size: int,
    epochs: float,
    max_steps: int | None,
    learning_rate: float,
    eps: float = 1e-3,
    weight_decay: float = 0.0,
    seed: int = 0,
    log_every: int = 10,
) -> dict:
    """Run MeZO over ``dataset`` (items with input_ids/labels). Returns train metrics."""
    for p in model.parameters():
        p.requires_grad_(False)  # forward-only: autograd never records anything
    params = _params(model)
    device = params[0].device
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, collate_fn=collator, generator=gen)
    steps = max_steps if max_steps is not None else max(1, math.ceil(epochs * len(loader)))
    seeds = random.Random(seed)
    model.train()  # dropout, if any, as in Trainer; the same mask is not guaranteed across the two passes
    losses, tokens, step = [], 0, 0
    start = time.perf_counter()
    while step < steps:
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            losses.append(
                mezo_step(model, params, batch, seeds.randrange(2**62), learning_rate, eps, weight_decay)
            )
            tokens += int(batch["attention_mask"].sum())
            step += 1
            if step >= steps:
                break
    runtime = time.perf_counter() - start
    model.eval()
    return {
        "train_loss": sum(losses) / len(losses),
        "train_loss_last": sum(losses[-log_every:]) / len(losses[-log_every:]),
        "steps": step,
        "train_tokens": tokens,
        "train_runtime_s": runtime,
    }
