"""What the dataset card says made the data: the model of each stage and the generators' settings."""

from __future__ import annotations

from typing import Any

from flows.config import PipelineConfig
from flows.llm_cache import score_model


def models_per_stage(cfg: PipelineConfig, records: list[dict[str, Any]]) -> dict[str, str]:
    """Which model (and backend) each stage that ran used."""
    ran = {r["stage"] for r in records}
    main = f"{cfg.model.model} ({cfg.model.backend} backend)"
    models = {stage: main for stage in ("generate_taxonomy", "generate_text", "generate_custom") if stage in ran}
    if "score" in ran:
        models["score (prior)"] = main
        specs = cfg.score.specs()
        if any(s.target == "conditional_model" for s in specs):
            models["condition (CoLoR conditional)"] = (f"{cfg.model.model} fine-tuned on {cfg.score.target} "
                                                       f"({cfg.score.conditional_method})")
        for name in dict.fromkeys(m for s in specs for m in s.models):
            chosen = score_model(cfg, name)
            models[f"score ({name})"] = f"{chosen.model} ({chosen.backend} backend)"
    if "refusal_aware" in ran:
        models["refusal_aware (greedy answers)"] = main
    if cfg.train.method:
        models["train"] = f"{cfg.model.model} ({cfg.train.method})"
    return models


def generator_settings(cfg: PipelineConfig) -> dict[str, Any]:
    g = cfg.generate
    out: dict[str, Any] = {}
    if g.taxonomy.enabled:
        out["GLAN (generate_taxonomy)"] = g.taxonomy.model_dump(mode="json", exclude={"enabled"})
    if g.text.enabled:
        out["Bonito (generate_text)"] = g.text.model_dump(mode="json", exclude={"enabled"})
    if g.custom:
        from flows.stages.generate_custom import load_generators

        for path, gen in zip(g.custom, load_generators(cfg), strict=True):
            out[f"{gen.name} (generate_custom)"] = {"import": path, **g.options.get(gen.name, {})}
    if g.inputs:
        out["inputs"] = list(g.inputs)
    return out


def score_definitions(cfg: PipelineConfig) -> dict[str, str]:
    """Column -> one line, for the card and the report."""
    return {s.column: s.definition or s.name for s in cfg.score.specs()}
