"""One training arm in a fresh Python process, so training's memory is its own.

The flow process has held the generation and scoring models by the time it trains (and Python
rarely gives freed memory back), so the train stage runs each arm as

    python -m flows.train_process SPEC.json METRICS.json

where SPEC.json holds the plain arguments of :func:`train` (paths, names, numbers). The child
writes its metrics (peak_rss_mb is then the child's own) and its log beside them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from pipelines.shards import atomic_write_text


def train(spec: dict[str, Any]) -> dict[str, Any]:
    """Run :func:`pipelines.finetune.run_training` from a plain spec (see the train stage's ``arm_spec``)."""
    from generators.refusal_certainty import refusal_eval
    from pipelines.finetune import run_training
    from pipelines.finetune.methods import resolve_method

    if spec.get("threads"):
        import torch

        torch.set_num_threads(spec["threads"])
    method, options = resolve_method(spec["method"], spec["options"])
    refusal = spec.get("refusal")
    return run_training(
        Path(spec["source"]), Path(spec["out"]), method=method, model=spec["model"], eval_path=Path(spec["eval_path"]),
        max_steps=spec["max_steps"], seed=spec["seed"], options=options,
        conditional_indicator=spec["conditional_indicator"], control_tokens=spec["control_tokens"],
        eval_before=spec["eval_before"], max_length=spec["max_length"], batch_size=spec.get("batch_size", 8),
        extra_eval=refusal_eval(**refusal) if refusal else None,
    )


def train_in_fresh_process(spec: dict[str, Any], folder: Path) -> dict[str, Any]:
    """:func:`train` in a child process; its output goes to ``folder/train.log`` (named on failure)."""
    folder.mkdir(parents=True, exist_ok=True)
    spec_path, metrics_path, log = folder / "train-spec.json", folder / "train-metrics.json", folder / "train.log"
    atomic_write_text(spec_path, json.dumps(spec, indent=1, sort_keys=True))
    metrics_path.unlink(missing_ok=True)
    with open(log, "w", encoding="utf-8") as out:
        rc = subprocess.call([sys.executable, "-m", "flows.train_process", str(spec_path), str(metrics_path)],
                             stdout=out, stderr=subprocess.STDOUT, env=os.environ.copy())
    if rc != 0 or not metrics_path.exists():
        tail = "".join(log.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)[-15:])
        raise RuntimeError(f"training in {folder.name} failed (exit {rc}); last lines of its log:\n{tail}")
    return json.loads(metrics_path.read_text(encoding="utf-8"))


def main(argv: list[str] | None = None) -> int:
    spec_path, metrics_path = (argv if argv is not None else sys.argv[1:])[:2]
    metrics = train(json.loads(Path(spec_path).read_text(encoding="utf-8")))
    atomic_write_text(Path(metrics_path), json.dumps(metrics, sort_keys=True, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
