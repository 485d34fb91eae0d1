"""The loss on target tokens only, with the LM head run only where a target token is predicted.

A causal LM computes logits for every position: ``rows x tokens x vocabulary`` floats, 49k wide for
SmolLM2, then copies them several times in the loss and its gradient. Only the positions that
predict an answer token count towards the loss, so the model is asked for just those
(``logits_to_keep`` as a boolean ``(batch, tokens)`` mask: transformers flattens the kept positions
to ``(kept, vocabulary)``) and the cross-entropy is taken against the next tokens' labels. Same
loss, same gradients, memory in proportion to answer tokens instead of whole rows.

    collate = TargetLogitsCollator(tokenizer.pad_token_id)   # adds logits_to_keep to each batch
    Trainer(..., data_collator=collate, compute_loss_func=target_loss)
    total, count = target_nll_sum(model, batch)              # evaluation, no labels in the forward
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from pipelines.finetune.data import IGNORE_INDEX, ChatCollator


def next_labels(labels: torch.Tensor) -> torch.Tensor:
    """(batch, tokens): the label position t predicts (labels[t + 1]); the last position predicts nothing."""
    out = torch.full_like(labels, IGNORE_INDEX)
    out[:, :-1] = labels[:, 1:]
    return out


def predicts_target(labels: torch.Tensor) -> torch.Tensor:
    """(batch, tokens) bool: the positions whose logits the loss reads."""
    return next_labels(labels) != IGNORE_INDEX


def supports_target_logits(model) -> bool:
    """Whether the model (or the model a PEFT wrapper holds) takes ``logits_to_keep`` as a mask
    (transformers' ``slice_logits_to_keep``, which older releases lack)."""
    from transformers import modeling_utils

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return (hasattr(modeling_utils, "slice_logits_to_keep")
            and "logits_to_keep" in inspect.signature(inner.forward).parameters)


class TargetLogitsCollator(ChatCollator):
    """:class:`ChatCollator` plus ``logits_to_keep``: the mask of positions that predict a target token."""

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        batch = super().__call__(features)
        batch["logits_to_keep"] = predicts_target(batch["labels"])
        return batch


def target_loss(outputs, labels: torch.Tensor, num_items_in_batch: torch.Tensor | int | None = None) -> torch.Tensor:
    """Trainer's ``compute_loss_func``: cross-entropy of the kept logits, summed, over the target
    tokens of the whole accumulated step (``num_items_in_batch``) or of this batch."""
    targets = next_labels(labels)
    targets = targets[targets != IGNORE_INDEX]
    total = F.cross_entropy(outputs.logits.float(), targets.to(outputs.logits.device), reduction="sum")
    count = num_items_in_batch if num_items_in_batch is not None else targets.numel()
    return total / count


def target_nll_sum(model, batch: Mapping[str, torch.Tensor]) -> tuple[float, int]:
    """(summed NLL, target tokens) of one collated batch; its logits only at target positions when
    the model allows, else the model's own loss weighted back to a sum."""
    labels = batch["labels"]
    keep = predicts_target(labels)
    count = int(keep.sum())
    if not count:
        return 0.0, 0
    if supports_target_logits(model):
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], logits_to_keep=keep)
        return float(target_loss(out, labels, 1)), count
    return float(model(**batch).loss) * count, count
