"""One training run as a folder: train on a saved selection, save, evaluate; and reload it.

* :func:`run_training` -- load a model, train on a saved selection (:func:`train_model`), save the
  run (LoRA adapter or full weights, the tokenizer, ``run_settings.json``), evaluate, write
  ``metrics.json``.
* :func:`save_run` / :func:`load_run` -- write a trained model as a run folder; reload one as a
  plain transformers model + tokenizer.

    from pipelines.finetune import run_training
    metrics = run_training("out/selection", "out/run", method="lisa", eval_path="target.jsonl")
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipelines.finetune.control import CONTROL_TAG
from pipelines.finetune.data import note_rejects, read_rows
from pipelines.finetune.heap import return_freed_tensors_to_the_os
from pipelines.finetune.prompt_tags import ensure_tokens, grow_embeddings, tag_tokens
from pipelines.finetune.train import check_options, prompt_tags, train_model

SETTINGS_FILE = "run_settings.json"
METRICS_FILE = "metrics.json"


def save_run(model: nn.Module, tokenizer, out_dir: str | Path, settings: dict) -> Path:
    """Write the adapter (PeftModel) or full weights, the tokenizer and ``run_settings.json``."""
    from peft import PeftModel

    from pipelines.shards import atomic_write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    adapter = isinstance(model, PeftModel)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    settings = {**settings, "adapter": adapter, "vocab_size": len(tokenizer)}
    atomic_write_text(out / SETTINGS_FILE, json.dumps(settings, indent=2, sort_keys=True, default=str) + "\n")
    return out


def load_run(out_dir: str | Path, device: str | None = None):
    """Reload a saved run as ``(model, tokenizer)``; an adapter is merged into its re-loaded base."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipelines.llm.embedded import load_model_and_tokenizer

    out = Path(out_dir)
    settings_path = out / SETTINGS_FILE
    if not settings_path.exists():
        raise FileNotFoundError(f"{settings_path} missing: {out} is not a saved fine-tuning run")
    settings = json.loads(settings_path.read_text(encoding="utf-8"))
    tokenizer = AutoTokenizer.from_pretrained(out)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if settings["adapter"]:
        from peft import PeftModel

        base, _ = load_model_and_tokenizer(settings["base_model"], device="cpu")
        grow_embeddings(base, len(tokenizer))
        model = PeftModel.from_pretrained(base, out).merge_and_unload()
    else:
        model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(device).eval(), tokenizer


def run_training(
    selection_path: str | Path,
    out_dir: str | Path,
    method: str = "lora",
    model: str = "embedded",
    eval_path: str | Path | None = None,
    **opts: Any,
) -> dict:
    """Load ``model``, train on the selection, save the run to ``out_dir``, evaluate, write metrics.json.

    ``opts``: train_model's keywords (epochs, max_steps, learning_rate, batch_size, max_length,
    seed, options, conditional_indicator, control_tokens) and train_limit (first N rows), device, eval_limit,
    eval_before (held-out loss, and EM/F1 on QA rows, of the untrained model too), max_new_tokens (QA generation; 0
    skips it), extra_eval (a training method's own evaluation on the QA eval rows, its metrics
    merged in: :class:`pipelines.finetune.evaluate.ExtraEval`). With an eval file of context-QA
    rows, exact match / token F1 are reported, with and without the indicator when ``conditional_indicator`` is on; with ``control_tokens`` every
    evaluation prompt starts with ``<|good|>`` (the selection rows must carry labels:
    :func:`pipelines.finetune.control.control_rows`). Rows the reader rejects are
    counted (train_rejects, eval_rejects) and written to ``rejects-train.jsonl`` /
    ``rejects-eval.jsonl`` in ``out_dir``.
    """
    from pipelines.finetune.evaluate import evaluate_run
    from pipelines.llm.embedded import load_model_and_tokenizer
    from pipelines.shards import atomic_write_text, rejects_file

    train_keys = {
        "epochs",
        "max_steps",
        "learning_rate",
        "batch_size",
        "max_length",
        "seed",
        "conditional_indicator",
        "control_tokens",
    }
    run_keys = {"options", "train_limit", "device", "eval_limit", "eval_before", "max_new_tokens", "extra_eval"}
    unknown = sorted(set(opts) - train_keys - run_keys)
    if unknown:
        raise TypeError(f"run_training got unknown keyword(s) {unknown}")
    train_kw = {k: v for k, v in opts.items() if k in train_keys}
    options = dict(opts.get("options") or {})
    check_options(method, options)

    # Bad input lines are rejects, not errors: written beside the run and counted in its metrics.
    out = Path(out_dir)
    counts: dict[str, int] = {}

    def read(path: str | Path, limit: int | None, name: str):
        rows, rejects = read_rows(path, limit=limit)
        counts[f"{name}_rejects"] = note_rejects(
            path, rejects, rejects_file(out, name) if rejects else None
        )
        return rows

    rows = read(selection_path, opts.get("train_limit"), "train")
    return_freed_tensors_to_the_os()  # before the first forward pass (evaluation comes first)
    mdl, tok = load_model_and_tokenizer(model, device=opts.get("device"))
    eval_rows = read(eval_path, opts.get("eval_limit"), "eval") if eval_path else None
    indicator = bool(train_kw.get("conditional_indicator", False))
    control = bool(train_kw.get("control_tokens", False))
    eval_kw = {
        "batch_size": train_kw.get("batch_size", 8),
        "max_length": train_kw.get("max_length", 512),
        "max_new_tokens": int(opts.get("max_new_tokens", 32)),
        "conditional_indicator": indicator,
        "control_tokens": control,
    }

    before = {}
    if eval_rows is not None and opts.get("eval_before", False):
        if indicator or control:  # the untrained model, asked the way the trained one will be
            ensure_tokens(tok, tag_tokens(prompt_tags(indicator, control, CONTROL_TAG)), mdl)
        before = evaluate_run(mdl, tok, eval_rows, **eval_kw)  # EM/F1 too on QA rows: the base row of a comparison
    # Train the loaded model itself (no copy) and keep a LoRA adapter unmerged so it saves as an adapter.
    trained, metrics = train_model(
        mdl, tok, rows, method, options={**options, "inplace": True, "merge": False}, **train_kw
    )

    settings = {
        "method": method,
        "base_model": model if model in {"embedded", "tiny"} else str(Path(model).resolve()),
        "selection": str(selection_path),
        "options": options,
        **train_kw,
    }
    out = save_run(trained, tok, out_dir, settings)
    if hasattr(trained, "merge_and_unload"):
        trained = trained.merge_and_unload()  # plain model: faster evaluation
    metrics.pop("lisa_history", None)
    metrics.update(counts, out_dir=str(out))
    if eval_rows is not None:
        metrics["eval_path"] = str(eval_path)
        metrics.update({f"{k}_before": v for k, v in before.items()})
        metrics.update(
            evaluate_run(trained, tok, eval_rows, **eval_kw, predictions_path=out / "predictions.jsonl",
                         extra_eval=opts.get("extra_eval"))
        )
    atomic_write_text(out / METRICS_FILE, json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return metrics
