"""Fine-tuning stage: full, LoRA/rsLoRA, LISA, HFT and MeZO behind one interface.

    from pipelines.finetune import prompt_good, run_training, train_model
    model, metrics = train_model(model, tokenizer, table, "lora", max_steps=50)
    metrics = run_training("out/selection", "out/run", method="lisa", eval_path="target.jsonl")
    prompt_good(messages)  # ask a model trained with control_tokens=True for a <|good|> answer

Command line: ``python -m pipelines.finetune --help``.

The names below load their module on first use, so importing one light submodule (the method
catalogue ``pipelines.finetune.methods``, which the run configuration reads) does not import
torch and transformers through this package.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> the submodule that defines it
_HOME = {
    "CONTROL_TOKENS": "control",
    "GOOD": "control",
    "prompt_good": "control",
    "INDICATOR": "data",
    "add_indicator": "data",
    "ensure_indicator_token": "data",
    "load_examples": "data",
    "METHODS": "methods",
    "load_run": "training_run",
    "run_training": "training_run",
    "save_run": "training_run",
    "train_model": "train",
}

__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOME))
