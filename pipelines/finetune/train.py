"""One interface for every fine-tuning method: :func:`train_model`, in memory.

* :func:`train_model` -- ``(model, tokenizer, rows, method) -> (trained model, metrics)``, in
  memory (the selectors use it to build CoLoR-Filter's conditional model).

Training a saved selection into a run folder (save, evaluate, reload) is
:mod:`pipelines.finetune.training_run`.

Methods: ``full``, ``lora`` (``rslora`` option), ``lisa``, ``hft`` go through transformers'
``Trainer`` (loss on assistant tokens only, via -100 labels); ``mezo`` runs its own forward-only
loop. From the shell: ``python -m pipelines.finetune --help``.
"""

from __future__ import annotations

import copy
import resource
import sys
import tempfile
from typing import Any

import torch
from torch import nn

from pipelines.finetune.control import CONTROL_TAG, CONTROL_TOKENS
from pipelines.finetune.data import (
    INDICATOR_TAG,
    ChatCollator,
    chat_rows,
    encode_rows,
)
from pipelines.finetune.heap import with_training_heap
from pipelines.finetune.methods import METHODS, apply_hft, apply_lora, count_params, set_trainable
from pipelines.finetune.prompt_tags import ensure_tokens, tag_tokens
from pipelines.finetune.target_logits import TargetLogitsCollator, supports_target_logits, target_loss

DEFAULT_LR = {"full": 2e-5, "lora": 2e-4, "lisa": 5e-5, "hft": 2e-5, "mezo": 1e-5}
# Everything `options` may carry; anything else is a typo and raises.
OPTION_HELP = {
    "lora_r": "LoRA rank (16)",
    "lora_alpha": "LoRA alpha (32)",
    "lora_dropout": "LoRA dropout (0.0)",
    "lora_targets": "module names LoRA wraps (all attention + MLP projections)",
    "rslora": "rank-stabilised LoRA: scale alpha/sqrt(r) (False)",
    "merge": "lora: return the adapter merged into a plain model (True) or the PeftModel (False)",
    "lisa_layers": "LISA: decoder layers active at a time (2)",
    "lisa_interval": "LISA: optimizer steps between re-samplings (20)",
    "mezo_eps": "MeZO: perturbation size (1e-3)",
    "weight_decay": "AdamW / MeZO weight decay (0.0)",
    "warmup_steps": "linear warm-up steps (0)",
    "lr_scheduler": "transformers scheduler name (linear)",
    "grad_accum": "gradient accumulation steps (1)",
    "micro_batch": "rows per forward pass; batch_size rows still make one optimizer step, by gradient "
    "accumulation (CPU: 2, GPU: batch_size). Memory grows with it: activations of every row of the pass",
    "gradient_checkpointing": "recompute each layer's activations in the backward pass instead of "
    "holding them (CPU: True, GPU: False): about a third more compute for a fraction of the memory",
    "target_logits": "compute logits only at the positions that predict an answer token (True): the same "
    "loss and gradients in a fraction of the memory; False runs the model's own full-sequence loss",
    "logging_steps": "log the train loss every N steps (10)",
    "bf16": "bfloat16 autocast (GPU: where supported; CPU: False, True to ask for it on a CPU that has it)",
    "inplace": "train the given model object instead of a copy (False)",
    "callbacks": "extra transformers TrainerCallbacks (not used by mezo)",
}


def check_options(method: str, options: dict) -> None:
    """Raise on an unknown method or an option not in :data:`OPTION_HELP` (a typo, not ignored)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    unknown = sorted(set(options) - set(OPTION_HELP))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown}; known: {sorted(OPTION_HELP)}")


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB, macOS bytes)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def _training_args(
    out_dir: str,
    *,
    device: torch.device,
    batch_size: int,
    epochs: float,
    max_steps: int | None,
    learning_rate: float,
    seed: int,
    options: dict,
):
    from transformers import TrainingArguments

    cuda = device.type == "cuda"
    # Measured on CPU, LoRA on the embedded model, the default train stage (30 steps): peak RSS
    # 8.3 GB with 8 rows a forward pass and no checkpointing (255 s an arm), 2.9 GB with 2 rows a
    # pass (still 8 a step) and checkpointing (247 s). On 512-token T0 rows (4 steps): 3,260 MB,
    # 2,902 MB with logits at answer positions only, 1,606 MB once freed tensors go back to the OS
    # (pipelines.finetune.heap), all with the same losses. Same train loss for any micro_batch: the
    # step's loss is the mean over all its target tokens.
    micro = int(options.get("micro_batch", batch_size if cuda else min(2, batch_size)))
    if batch_size % micro:
        raise ValueError(f"micro_batch {micro} must divide batch_size {batch_size}")
    checkpointing = bool(options.get("gradient_checkpointing", not cuda))
    # Fewer pad tokens per batch (a real speed-up on CPU); the argument was renamed in transformers 5.
    fields = TrainingArguments.__dataclass_fields__
    grouping = (
        {"train_sampling_strategy": "group_by_length"}
        if "train_sampling_strategy" in fields
        else {"group_by_length": True}
    )
    return TrainingArguments(
        **grouping,
        output_dir=out_dir,
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=int(options.get("grad_accum", 1)) * (batch_size // micro),
        gradient_checkpointing=checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if checkpointing else None,
        num_train_epochs=epochs,
        max_steps=max_steps if max_steps is not None else -1,
        learning_rate=learning_rate,
        weight_decay=float(options.get("weight_decay", 0.0)),
        lr_scheduler_type=options.get("lr_scheduler", "linear"),
        warmup_steps=int(options.get("warmup_steps", 0)),
        logging_steps=int(options.get("logging_steps", 10)),
        seed=seed,
        data_seed=seed,
        use_cpu=not cuda,
        bf16=bool(options.get("bf16", cuda and torch.cuda.is_bf16_supported())),
        include_num_input_tokens_seen="non_padding",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        remove_unused_columns=False,
    )


# The heap returns freed tensors to the OS while training (2.9 -> 1.6 GB peak), and only then.
@with_training_heap
def train_model(
    model: nn.Module,
    tokenizer,
    table_or_dataset: Any,
    method: str = "lora",
    *,
    epochs: float = 1.0,
    max_steps: int | None = None,
    learning_rate: float | None = None,
    batch_size: int = 8,
    max_length: int = 512,
    seed: int = 0,
    options: dict | None = None,
    conditional_indicator: bool = False,
    control_tokens: bool = False,
) -> tuple[nn.Module, dict]:
    """Fine-tune ``model`` on the rows with ``method``; return ``(trained model, metrics)``.

    ``table_or_dataset``: an example table (instruction/context/response/meta), an HF dataset or a
    list of dicts with chat ``messages``. The loss covers assistant tokens only.

    The given model is not modified (a copy trains) unless ``options={"inplace": True}``. For
    ``lora`` the returned model is the adapter merged into a plain transformers model, unless
    ``options={"merge": False}`` (then a peft ``PeftModel``). With ``conditional_indicator`` the
    token ``[IND]`` is added to ``tokenizer`` in place (it changes no other text's tokens), the
    model's embeddings grow by one row, and context-dependent rows get ``" [IND]"``. With
    ``control_tokens`` ``<|good|>`` and ``<|bad|>`` are added the same way and every row's prompt
    starts with its label (the ``control_token`` field, see :mod:`pipelines.finetune.control`).

    metrics: method, steps, train_loss, train_runtime_s, train_tokens (non-pad), tokens_per_s,
    trainable_params, total_params, rows, truncated_rows (cut to max_length: the whole answer up to its
    cap, the prompt's tail), learning_rate, peak_rss_mb (+ method extras).
    """
    from transformers import Trainer, set_seed

    options = dict(options or {})
    check_options(method, options)
    if tokenizer.pad_token_id is None:
        raise ValueError("tokenizer has no pad token; set tokenizer.pad_token first")
    if not options.get("inplace", False):
        model = copy.deepcopy(model)
    set_seed(seed)
    tags = prompt_tags(conditional_indicator, control_tokens, CONTROL_TAG)
    new_ids = ensure_tokens(tokenizer, tag_tokens(tags), model) if tags else []
    # Over-long rows are cut by the scorer's rule (pipelines.truncation), never dropped.
    encoded, truncated = encode_rows(tokenizer, chat_rows(table_or_dataset, tags=tags), max_length, new_ids)
    dataset = [{"input_ids": e.input_ids, "labels": e.labels} for e in encoded]
    lr = learning_rate if learning_rate is not None else DEFAULT_LR[method]
    device = next(model.parameters()).device
    extras: dict[str, Any] = {}

    if method == "mezo":
        run = _train_mezo(model, dataset, tokenizer, batch_size, epochs, max_steps, lr, seed, options)
        trainable = count_params(model)  # MeZO moves every parameter, without gradients
    else:
        callbacks = []
        if method == "full":
            set_trainable(model, True)
        elif method == "lora":
            model = apply_lora(model, options, new_ids)
        elif method == "hft":
            extras["hft_frozen"] = len(apply_hft(model, seed))
        elif method == "lisa":
            from pipelines.finetune.lisa import LisaCallback

            set_trainable(model, True)  # the optimizer must see every layer; the callback freezes
            lisa = LisaCallback(
                model, int(options.get("lisa_layers", 2)), int(options.get("lisa_interval", 20)), seed
            )
            callbacks.append(lisa)
        callbacks += list(options.get("callbacks", []))  # after LISA's, so they see its re-sampling
        with tempfile.TemporaryDirectory(prefix="finetune-") as tmp:
            args = _training_args(
                tmp,
                device=device,
                batch_size=batch_size,
                epochs=epochs,
                max_steps=max_steps,
                learning_rate=lr,
                seed=seed,
                options=options,
            )
            # Logits only where an answer token is predicted: the loss and gradients are the
            # same, the vocabulary-wide logits (most of a CPU step's memory) shrink to the answers'.
            target_only = bool(options.get("target_logits", True)) and supports_target_logits(model)
            trainer = Trainer(
                model=model,
                args=args,
                train_dataset=dataset,
                data_collator=(TargetLogitsCollator if target_only else ChatCollator)(tokenizer.pad_token_id),
                compute_loss_func=target_loss if target_only else None,
                callbacks=callbacks,
            )
            out = trainer.train()
        trainable = count_params(model, trainable_only=True)  # LISA: the active set at the end
        history = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        run = {
            "train_loss": out.metrics["train_loss"],
            "train_loss_last": history[-1] if history else out.metrics["train_loss"],
            "steps": trainer.state.global_step,
            "train_tokens": int(trainer.state.num_input_tokens_seen),
            "train_runtime_s": out.metrics["train_runtime"],
        }
        if method == "lisa":
            extras["lisa_history"] = lisa.history
            extras["lisa_dropped_states"] = lisa.dropped_states
        model.eval()
        if method == "lora" and options.get("merge", True):
            model = model.merge_and_unload()

    metrics = {
        "method": method,
        **run,
        "tokens_per_s": run["train_tokens"] / max(run["train_runtime_s"], 1e-9),
        "trainable_params": trainable,
        "total_params": count_params(model),
        "rows": len(encoded),
        "truncated_rows": truncated,
        "learning_rate": lr,
        "conditional_indicator": conditional_indicator,
        **({"control_tokens": control_token_rows(tokenizer, encoded)} if control_tokens else {}),
        "peak_rss_mb": peak_rss_mb(),
        **extras,
    }
    return model, metrics


def prompt_tags(conditional_indicator: bool, control_tokens: bool, control_tag) -> tuple:
    """The prompt tags a run writes: ``[IND]`` by the row's flag, then a control token
    (``control_tag``: :data:`~pipelines.finetune.control.CONTROL_TAG`, each row's label, when
    training; :data:`~pipelines.finetune.control.GOOD_TAG` when evaluating)."""
    return ((INDICATOR_TAG,) if conditional_indicator else ()) + ((control_tag,) if control_tokens else ())


def control_token_rows(tokenizer, encoded) -> dict[str, int]:
    """Rows whose encoded input holds each control token, and rows without one (``cut``: none
    should be, since encoding puts a tag that truncation cut off back)."""
    ids = dict(zip(CONTROL_TOKENS, tokenizer.convert_tokens_to_ids(list(CONTROL_TOKENS)), strict=True))
    counts = {tok: sum(ids[tok] in e.input_ids for e in encoded) for tok in CONTROL_TOKENS}
    return {**counts, "cut": len(encoded) - sum(counts.values())}


def _train_mezo(model, dataset, tokenizer, batch_size, epochs, max_steps, lr, seed, options) -> dict:
    from pipelines.finetune.mezo import train_mezo

    return train_mezo(
        model,
        dataset,
        ChatCollator(tokenizer.pad_token_id),
        batch_size=batch_size,
        epochs=epochs,
        max_steps=max_steps,
        learning_rate=lr,
        eps=float(options.get("mezo_eps", 1e-3)),
        weight_decay=float(options.get("weight_decay", 0.0)),
        seed=seed,
    )
