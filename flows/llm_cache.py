"""One loaded model backend per (settings, model) per process: stages and shard tasks share it."""

from __future__ import annotations

import functools

from flows.config import ModelConfig, PipelineConfig


@functools.lru_cache(maxsize=4)
def _cached_llm(backend: str, model: str, base_url: str | None, batch: int, budget: int, max_length: int,
                eager: bool, engine: str, scoring_engine: str, threads: int | None, base: str | None = None,
                hidden_dtype: str = "auto"):
    from pipelines.llm import make_backend, resolve_backend_name

    name = resolve_backend_name(backend)
    if name == "hf":
        return make_backend("hf", model, eager_attention=eager, generation_batch_size=batch,
                            token_budget=budget, max_length=max_length, generation_engine=engine,
                            scoring_engine=scoring_engine, scoring_base=base, ct2_threads=threads,
                            hidden_dtype=hidden_dtype)
    if name == "openai":
        return make_backend("openai", model, base_url=base_url)
    return make_backend(name, model)


def get_llm(cfg: ModelConfig, model: str | None = None, eager: bool = False, trained_from_it: bool = False):
    """The backend for ``cfg`` (``model`` overrides its model, e.g. a conditional model's folder;
    ``trained_from_it``: that model was fine-tuned from cfg.model, so it scores on the same engine)."""
    if cfg.threads:
        import torch

        # Set on purpose: torch's default (every core) spins in OpenMP barriers when the
        # machine is shared with another job or with other Dask workers.
        torch.set_num_threads(cfg.threads)
    return _cached_llm(cfg.backend, model or cfg.model, cfg.base_url, cfg.generation_batch_size,
                       cfg.token_budget, cfg.max_length, eager, cfg.generation_engine, cfg.scoring_engine,
                       cfg.threads, cfg.model if trained_from_it else None, cfg.hidden_dtype)


def release_all() -> None:
    """Drop every cached backend (before training: the trainer loads its own copy)."""
    import gc

    _cached_llm.cache_clear()
    gc.collect()  # the backends hold reference cycles (model <-> generator); free them now


def score_model(cfg: PipelineConfig, name: str) -> ModelConfig:
    """The run's model settings with those of the model a score names (score.models.<name>) where set."""
    chosen = cfg.score.model_settings(name)
    return cfg.model.model_copy(update={k: v for k, v in chosen.items() if v is not None})


def model_for(cfg: PipelineConfig, name: str):
    """A backend for a model a score names (``Score.models``), from score.models by that name."""
    return get_llm(score_model(cfg, name))
