"""The score section of the run configuration (flows/config.py loads and checks the whole)."""

from __future__ import annotations

from typing import Any, Literal

from instruct_selectors.scores.catalogue import available
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipelines.llm import BACKENDS


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ScoreModel(_Section):
    """A model a score asks for by name (``Score.models``): unset fields are the run's model's."""

    backend: Literal[BACKENDS] | None = Field(None, description="default: model.backend")
    model: str | None = Field(None, description="default: model.model")
    base_url: str | None = Field(None, description="openai backend: its endpoint")


class ScoreConfig(_Section):
    # target_sim and CoLoR both feed the default ranking (flows/default_selection.py has why).
    scores: list[str] = Field(default_factory=lambda: ["target_sim", "color", "ifd", "ctx_loss"],
                              description="scores to compute: built-in names or those of score.custom")
    custom: list[str] = Field(default_factory=list, description="your own scores by import path "
                              "('mypkg.scores:TOXICITY', an instruct_selectors.scores.base.Score)")
    options: dict[str, dict[str, Any]] = Field(default_factory=dict, description="options per score name "
                                               "(a score's own settings, e.g. a custom score's)")
    target: str | None = Field("data/target.jsonl", description="target (downstream) rows for target_sim, otd and CoLoR-Filter")
    target_holdout: float = Field(0.3, ge=0, lt=1, description="share of the target rows (seeded by run.seed) kept "
                                  "from the condition stage: train evaluates on them, select decontaminates against them")
    conditional_method: Literal["lora", "full"] = "lora"
    conditional_epochs: float = Field(1.0, gt=0)
    target_context: bool = Field(False, description="target_sim and otd: embed the target rows with their context field "
                                 "(false: instruction and answer only, the task's form rather than its documents)")
    ctx_threshold: float | None = Field(None, description="score_ctx_* value above which a row is context-dependent")
    ctx_quantile: float | None = Field(0.5, ge=0, le=1, description="or: the quantile used as that threshold")
    models: dict[str, ScoreModel] = Field(default_factory=dict, validate_default=True, description="models "
                                          "the scores ask for by name (Score.models), e.g. models.judge = {model: ..., "
                                          "backend: openai}; unset fields are the run's model's")

    @model_validator(mode="before")
    @classmethod
    def _moved(cls, data: Any) -> Any:
        """Settings that moved into a score's own options: say where, rather than 'extra field'."""
        moved = {"color_reduction": "score.options.color.reduction",
                 "target_pooling": "score.options.target_sim.pooling (and score.options.otd.pooling)",
                 "attn_layer": "score.options.ctx_attn.layer",
                 "judge": "score.models.judge (backend, model, base_url) and score.options.judge (retries, max_tokens)"}
        old = [k for k in moved if isinstance(data, dict) and k in data]
        if old:
            raise ValueError("; ".join(f"score.{k} moved to {moved[k]}" for k in old))
        return data

    @field_validator("models")
    @classmethod
    def _builtin_models(cls, v: dict[str, ScoreModel]) -> dict[str, ScoreModel]:
        return {"judge": ScoreModel(), **v}  # the built-in judge score's model, set or not

    @field_validator("scores")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        return list(dict.fromkeys(v))

    @model_validator(mode="after")
    def _known_scores(self):
        known = available(self.custom)  # imports the custom scores: a bad path fails here
        for field, names in (("scores", self.scores), ("options", list(self.options))):
            unknown = [n for n in names if n not in known]
            if unknown:
                raise ValueError(f"score.{field} names unknown score(s) {unknown}: choose from {tuple(known)} "
                                 "(your own: score.custom)")
        for name in self.scores:
            known[name].parse_options(self.options.get(name))
            unnamed = [m for m in known[name].models if m not in self.models]
            if unnamed:
                raise ValueError(f"score {name!r} asks for the model(s) {unnamed}: name each in score.models "
                                 f"(e.g. score.models.{unnamed[0]} = {{model: ..., backend: ...}})")
        return self

    def model_settings(self, name: str) -> dict[str, Any]:
        """The backend/model/base_url set for a model a score names (unset ones: None)."""
        if name in self.models:
            return self.models[name].model_dump()
        raise ValueError(f"no model named {name!r} in score.models (named: {sorted(self.models)})")

    def specs(self) -> list:
        """The Score of each name in ``scores``, in order."""
        known = available(self.custom)
        return [known[n] for n in self.scores]

    def options_for(self, name: str) -> Any:
        """Score ``name``'s options, parsed by its own options model (its defaults where unset)."""
        return available(self.custom)[name].parse_options(self.options.get(name))
