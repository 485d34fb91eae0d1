"""LISA (Layerwise Importance Sampled AdamW) as a transformers ``TrainerCallback``.

Embeddings, the LM head and every other parameter outside the decoder stack always train.
Every ``interval`` steps a fresh random set of ``n_layers`` decoder layers is unfrozen and all
other layers are frozen. The optimizer state (AdamW moments) of parameters that were just
refrozen is dropped, so optimizer memory stays bounded by the always-on part plus ``n_layers``
layers instead of growing to the whole model.

The Trainer builds its optimizer over the parameters that require grad when training starts,
so the model must enter ``Trainer`` with everything trainable; ``on_train_begin`` then freezes
all but the first sample. Frozen parameters get no ``.grad``, and AdamW skips parameters whose
grad is ``None``, so they neither move nor gain state.
"""

from __future__ import annotations

import random

from torch import nn
from transformers import TrainerCallback

from pipelines.finetune.methods import decoder_layers


class LisaCallback(TrainerCallback):
    """Re-sample the active decoder layers every ``interval`` optimizer steps (seeded)."""

    def __init__(self, model: nn.Module, n_layers: int = 2, interval: int = 20, seed: int = 0):
        _, self.layers = decoder_layers(model)
        if not 1 <= n_layers <= len(self.layers):
            raise ValueError(f"lisa_layers must be in 1..{len(self.layers)}, got {n_layers}")
        if interval < 1:
            raise ValueError(f"lisa_interval must be >= 1, got {interval}")
        self.n_layers, self.interval = n_layers, interval
        self.rng = random.Random(seed)
        self.active: list[int] = []
        self.history: list[tuple[int, list[int]]] = []  # (step, active layers): for logs and tests
        self.dropped_states = 0

    def resample(self, step: int, optimizer=None) -> list[int]:
        """Activate a new random set of layers; drop optimizer state of those that were frozen."""
        previous = set(self.active)
        self.active = sorted(self.rng.sample(range(len(self.layers)), self.n_layers))
        for i, layer in enumerate(self.layers):
            on = i in self.active
            for p in layer.parameters():
                p.requires_grad_(on)
                if not on:
                    p.grad = None
        if optimizer is not None:
            opt = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps the torch optimizer
            for i in previous - set(self.active):
                for p in self.layers[i].parameters():
                    if opt.state.pop(p, None) is not None:
                        self.dropped_states += 1
        self.history.append((step, list(self.active)))
        return self.active

    def on_train_begin(self, args, state, control, optimizer=None, **kwargs):
        self.resample(state.global_step, optimizer)

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        # global_step counts finished optimizer steps: switch after every `interval` of them.
        if state.global_step % self.interval == 0 and state.global_step < state.max_steps:
            self.resample(state.global_step, optimizer)
