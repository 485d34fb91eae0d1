"""Which parameters each fine-tuning method trains: full, LoRA/rsLoRA (peft) and HFT.

LISA (:mod:`pipelines.finetune.lisa`) and MeZO (:mod:`pipelines.finetune.mezo`) change what
trains *during* training and live in their own modules; this one sets up the static cases:

* ``full``: every parameter;
* ``lora``: peft LoRA adapters on all attention and MLP projections (rank 16, alpha 32 by
  default); ``rslora=True`` scales by ``alpha/sqrt(r)`` instead of ``alpha/r``;
* ``hft``: Half Fine-Tuning -- in every decoder layer, 2 of the 4 attention projections and
  alternately 1 or 2 of the 3 MLP projections are frozen, drawn with a seed (a new stage draws
  with a new seed); norms, embeddings and head keep training.

Run ``python -m pipelines.finetune --help`` for the options as command-line flags.

The catalogue (:data:`METHODS`, :data:`METHOD_CHOICES`, :func:`resolve_method`) imports without
torch: the run configuration (``flows/config.py``) validates method names with it, and loading a
config must stay cheap. torch is imported by the functions that touch a model.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

ATTN_PROJ = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_PROJ = ("gate_proj", "up_proj", "down_proj")
LORA_TARGETS = list(ATTN_PROJ + MLP_PROJ)
METHODS = ("full", "lora", "lisa", "hft", "mezo")
# What users may name: the methods plus rsLoRA, which is LoRA with ``rslora=True``.
METHOD_CHOICES = (*METHODS, "rslora")


def resolve_method(name: str, options: dict) -> tuple[str, dict]:
    """(method, options) for a user-facing name: ``rslora`` -> ``lora`` with ``rslora=True``."""
    if name not in METHOD_CHOICES:
        raise ValueError(f"unknown method {name!r}: choose one of {', '.join(METHOD_CHOICES)}")
    if name == "rslora":
        return "lora", {**options, "rslora": True}
    return name, dict(options)


def decoder_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The stack of decoder blocks (``model.model.layers`` for Llama-family models) and its name."""
    from torch import nn

    for name, module in model.named_modules():
        if (
            isinstance(module, nn.ModuleList)
            and len(module)
            and name.split(".")[-1] in {"layers", "h", "blocks"}
        ):
            return name, module
    raise ValueError(f"cannot find the decoder layers of {type(model).__name__}")


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    # Tied weights are one tensor: count each parameter once.
    seen = {id(p): p for p in model.parameters() if p.requires_grad or not trainable_only}
    return sum(p.numel() for p in seen.values())


def set_trainable(model: nn.Module, trainable: bool) -> None:
    for p in model.parameters():
        p.requires_grad_(trainable)


# --------------------------------------------------------------------------- LoRA
def apply_lora(model: nn.Module, options: dict, new_token_ids: Sequence[int] = ()) -> nn.Module:
    """Wrap ``model`` in a peft LoRA model; the embedding rows of ``new_token_ids`` (added special
    tokens: ``[IND]``, control tokens) train too."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=int(options.get("lora_r", 16)),
        lora_alpha=float(options.get("lora_alpha", 32)),
        lora_dropout=float(options.get("lora_dropout", 0.0)),
        target_modules=list(options.get("lora_targets", LORA_TARGETS)),
        use_rslora=bool(options.get("rslora", False)),
        # A new token's embedding is random-ish: let just that row train (peft's trainable tokens),
        # not the whole vocabulary matrix.
        trainable_token_indices=list(new_token_ids) or None,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


# --------------------------------------------------------------------------- HFT
def hft_frozen_names(model: nn.Module, seed: int) -> list[str]:
    """Names of the projection weights HFT freezes: per layer 2 of 4 attention, 1 or 2 of 3 MLP.

    Layers alternate between freezing 1 and 2 MLP matrices (which parity starts is drawn too), so
    about half of each layer's matrices are frozen. Same seed and model -> same names.
    """
    from torch import nn

    rng = random.Random(seed)
    prefix, layers = decoder_layers(model)
    start = rng.randrange(2)
    frozen = []
    for i, layer in enumerate(layers):
        linears = {n.split(".")[-1]: n for n, m in layer.named_modules() if isinstance(m, nn.Linear)}
        attn = [linears[k] for k in ATTN_PROJ if k in linears]
        mlp = [linears[k] for k in MLP_PROJ if k in linears]
        if len(attn) != 4 or len(mlp) != 3:
            raise ValueError(
                f"HFT expects q/k/v/o and gate/up/down projections; layer {i} has {sorted(linears)}"
            )
        n_mlp = 1 + (i + start) % 2
        for name in rng.sample(attn, 2) + rng.sample(mlp, n_mlp):
            frozen.append(f"{prefix}.{i}.{name}.weight")
            if getattr(layer.get_submodule(name), "bias", None) is not None:
                frozen.append(f"{prefix}.{i}.{name}.bias")
    return frozen


def apply_hft(model: nn.Module, seed: int) -> list[str]:
    """Freeze HFT's half (see :func:`hft_frozen_names`); everything else trains. Returns the frozen names."""
    frozen = set(hft_frozen_names(model, seed))
    for name, p in model.named_parameters():
        p.requires_grad_(name not in frozen)
    return sorted(frozen)
