"""Fine-tuning stage: full, LoRA/rsLoRA, LISA, HFT and MeZO behind one interface.

    from pipelines.finetune import prompt_good, run_training, train_model
    model, metrics = train_model(model, tokenizer, table, "lora", max_steps=50)
    metrics = run_training("out/selection", "out/run", method="lisa", eval_path="target.jsonl")
    prompt_good(messages)  # ask a model trained with control_tokens=True for a <|good|> answer

Command line: ``python -m pipelines.finetune --help``.
"""

from pipelines.finetune.control import CONTROL_TOKENS, GOOD, prompt_good
from pipelines.finetune.data import INDICATOR, add_indicator, ensure_indicator_token, load_examples
from pipelines.finetune.methods import METHODS
from pipelines.finetune.train import load_run, run_training, save_run, train_model

__all__ = [
    "CONTROL_TOKENS",
    "GOOD",
    "INDICATOR",
    "METHODS",
    "add_indicator",
    "ensure_indicator_token",
    "load_examples",
    "load_run",
    "prompt_good",
    "run_training",
    "save_run",
    "train_model",
]
