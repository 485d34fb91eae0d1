"""What HFBackend (pipelines/llm/hf.py) decides before it runs anything: which engine generates and
which scores (``auto`` resolved from the model and the device), the precision of the hidden-state
pass, and how a generation call is cut into batches. Pure functions of their arguments and the
machine's instruction set; the measurements behind each default are in hf.py's docstring."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

import torch

GENERATION_ENGINES = ("auto", "hf", "ct2")
SCORING_ENGINES = ("auto", "hf", "ct2")
HIDDEN_DTYPES = ("auto", "float32", "bfloat16")


def resolve_scoring_engine(engine: str, model_id: str = "custom", device: torch.device | str = "cpu",
                           base_id: str | None = None) -> str:
    """``auto`` -> ``ct2`` on CPU for the embedded model and for models trained from it (``base_id``:
    CoLoR's conditional model, so prior and conditional losses come from the same engine) when
    ctranslate2 is importable, else ``hf`` (see the module doc for the measurement)."""
    if engine not in SCORING_ENGINES:
        raise ValueError(f"unknown scoring engine {engine!r}: choose one of {', '.join(SCORING_ENGINES)}")
    if engine != "auto":
        return engine
    from pipelines.llm.embedded import EMBEDDED

    on_cpu = torch.device(device).type == "cpu"
    return "ct2" if (base_id or model_id) == EMBEDDED and on_cpu and importlib.util.find_spec("ctranslate2") else "hf"


# ct2 runs a call's batches side by side, one per core, so a call of fewer prompts than a batch
# holds is cut in two (not by the core count: a call's texts must not depend on the machine). On
# the 2-core machine the default job's generation levels (2-13 prompts each) ran on one core.
CT2_MIN_BATCHES = 2


def cut_batches(order: Sequence[int], batch_size: int, min_batches: int = 1) -> list[list[int]]:
    """``order`` cut into contiguous batches of at most ``batch_size``: as many as that needs, at
    least ``min_batches`` (when there are as many items); with ``min_batches`` 1, full batches and
    the rest last, else sizes as even as can be."""
    n = len(order)
    k = max(-(-n // batch_size), min(min_batches, n))
    if k <= 1 or min_batches <= 1:
        return [list(order[b : b + batch_size]) for b in range(0, n, batch_size)]
    size, extra = divmod(n, k)
    bounds = [i * size + min(i, extra) for i in range(k + 1)]
    return [list(order[bounds[i] : bounds[i + 1]]) for i in range(k)]


def native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX tiles)."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # a torch without the probes: assume not
        return False


def resolve_hidden_dtype(dtype: str, scoring_engine: str, device: torch.device | str = "cpu") -> str:
    """``auto`` -> ``bfloat16`` on a CPU with native bf16 when scoring runs on ct2 (the fast CPU
    path, where it was measured; see the module doc), else ``float32``."""
    if dtype not in HIDDEN_DTYPES:
        raise ValueError(f"unknown hidden_dtype {dtype!r}: choose one of {', '.join(HIDDEN_DTYPES)}")
    if dtype != "auto":
        return dtype
    fast = scoring_engine == "ct2" and torch.device(device).type == "cpu" and native_bf16()
    return "bfloat16" if fast else "float32"


def resolve_generation_engine(engine: str, model_id: str, device: torch.device | str) -> str:
    """``auto`` -> ``ct2`` for the embedded model on CPU when ctranslate2 is importable, else ``hf``."""
    if engine not in GENERATION_ENGINES:
        raise ValueError(f"unknown generation engine {engine!r}: choose one of {', '.join(GENERATION_ENGINES)}")
    if engine != "auto":
        return engine
    from pipelines.llm.embedded import EMBEDDED

    on_cpu = torch.device(device).type == "cpu"
    return "ct2" if model_id == EMBEDDED and on_cpu and importlib.util.find_spec("ctranslate2") else "hf"
