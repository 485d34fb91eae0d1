"""LLM backends behind one interface (see base.py). Pick one by name with :func:`make_backend`.

| name     | what                                                   | extra       |
|----------|--------------------------------------------------------|-------------|
| hf       | transformers, CPU or GPU (default model: embedded)     | core        |
| vllm     | vLLM on GPU, scoring with prompt_logprobs               | `[vllm]`    |
| openai   | any OpenAI-compatible HTTP endpoint                     | core        |
| llamacpp | llama-cpp-python generation on CPU (same GGUF)          | `[llamacpp]`|
| auto     | vllm when importable and CUDA is present, else hf       |             |
"""

from __future__ import annotations

import importlib.util

from pipelines.llm.base import LLM, LossRequest, LossResult, MissingExtra, Prompt, Sampling

BACKENDS = ("auto", "hf", "vllm", "openai", "llamacpp")

__all__ = ["BACKENDS", "LLM", "LossRequest", "LossResult", "MissingExtra", "Prompt", "Sampling", "backend_class", "make_backend", "resolve_backend_name"]


def resolve_backend_name(name: str) -> str:
    if name != "auto":
        return name
    import torch

    return "vllm" if importlib.util.find_spec("vllm") and torch.cuda.is_available() else "hf"


def backend_class(name: str) -> type:
    """The class behind a backend name (its class attributes, e.g. ``structured_output``, without
    loading a model)."""
    name = resolve_backend_name(name)
    if name == "hf":
        from pipelines.llm.hf import HFBackend

        return HFBackend
    if name == "vllm":
        from pipelines.llm.vllm_backend import VLLMBackend

        return VLLMBackend
    if name == "openai":
        from pipelines.llm.openai_backend import OpenAIBackend

        return OpenAIBackend
    if name == "llamacpp":
        from pipelines.llm.llamacpp_backend import LlamaCppBackend

        return LlamaCppBackend
    raise ValueError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")


def make_backend(name: str = "auto", model: str = "embedded", **options) -> LLM:
    """One explicit switch from a backend name to an instance; options go to that backend."""
    name = resolve_backend_name(name)
    cls = backend_class(name)
    if name == "hf":
        return cls.load(model, **options)
    if name == "openai":
        return cls(model=model, **options)
    return cls(model, **options)
