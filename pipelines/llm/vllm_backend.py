"""vLLM backend (GPU, optional extra ``pip install '.[vllm]'``): batched generation and scoring.

    from pipelines.llm import make_backend
    llm = make_backend("vllm", model="embedded", gpu_memory_utilization=0.5)   # engine kwargs pass through

* vLLM is imported when the backend is built, never at module import; without it the error says
  which extra to install (:class:`MissingExtra`).
* ``generate``: prompts are rendered and tokenised here, exactly as the hf backend does (chat
  prompts with the model's own template, no extra special tokens), and given to vLLM as token
  ids. ``SamplingParams.max_tokens`` is always set (vLLM's default is 16); request ``i`` gets
  ``seed = sampling.seed * 1_000_003 + i``, so identical prompts sampled at temperature > 0 differ.
* ``loss``: each request is tokenised with ``pipelines.llm.nll.encode`` (prompt and completion
  apart, so no token merges across them) and run with ``SamplingParams(prompt_logprobs=0,
  max_tokens=1)``; the completion NLLs are read from the prompt logprobs at the completion
  positions (:func:`completion_nll`). Prefix caching is off by default: prompt logprobs are not
  computed for cached prefix tokens.
* vLLM does not give GPU memory back while the process lives: run it in its own process
  (a Prefect task with a process runner, or a subprocess) when other GPU work follows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pipelines.llm.base import LossRequest, LossResult, MissingExtra, Progress, Prompt, Sampling, no_extras
from pipelines.llm.usage import Usage, metered


def sampling_params_kwargs(
    sampling: Sampling, index: int, stop_token_ids: Sequence[int] = ()
) -> dict[str, Any]:
    """Keyword arguments of ``vllm.SamplingParams`` for prompt ``index`` (max_tokens always set)."""
    kwargs: dict[str, Any] = {
        "temperature": sampling.temperature,
        "top_p": sampling.top_p if sampling.temperature > 0 else 1.0,
        "max_tokens": int(sampling.max_tokens),
        "seed": sampling.seed * 1_000_003 + index,
    }
    if sampling.stop:
        kwargs["stop"] = list(sampling.stop)
    if stop_token_ids:
        kwargs["stop_token_ids"] = list(stop_token_ids)
    return kwargs


def structured_kwargs(vllm: Any, schema: dict[str, Any] | None) -> dict[str, Any]:
    """SamplingParams keyword that constrains decoding to ``schema``: ``structured_outputs`` in
    vLLM >= 0.10.2, ``guided_decoding`` before (the older name is gone in newer releases)."""
    if schema is None:
        return {}
    sp = vllm.sampling_params
    if hasattr(sp, "StructuredOutputsParams"):
        return {"structured_outputs": sp.StructuredOutputsParams(json=schema)}
    return {"guided_decoding": sp.GuidedDecodingParams(json=schema)}


# Scoring: prompt logprobs of the actual tokens only; the one generated token is thrown away.
LOSS_PARAMS_KWARGS: dict[str, Any] = {"prompt_logprobs": 0, "max_tokens": 1, "temperature": 0.0}


def _logprob_value(entry: Any) -> float:
    """A vLLM ``Logprob`` object or a bare float."""
    return float(getattr(entry, "logprob", entry))


def completion_nll(
    prompt_logprobs: Sequence[Mapping[int, Any] | None], token_ids: Sequence[int], n_prompt: int
) -> np.ndarray:
    """Per-token NLL of ``token_ids[n_prompt:]`` from vLLM's ``RequestOutput.prompt_logprobs``.

    ``prompt_logprobs[k]`` maps token id -> Logprob for position ``k`` (``None`` at position 0,
    which has no context) and always holds the actual token ``token_ids[k]``, whatever the top-k.
    """
    if len(prompt_logprobs) != len(token_ids):
        raise ValueError(f"{len(prompt_logprobs)} prompt logprobs for {len(token_ids)} tokens")
    if n_prompt < 1:
        raise ValueError("the prompt needs at least one token (encode() conditions on the start token)")
    out = np.empty(len(token_ids) - n_prompt, dtype=np.float64)
    for k in range(n_prompt, len(token_ids)):
        entry = prompt_logprobs[k]
        if entry is None or token_ids[k] not in entry:
            raise ValueError(f"no logprob for token {token_ids[k]} at position {k}")
        out[k - n_prompt] = -_logprob_value(entry[token_ids[k]])
    return out


class VLLMBackend:
    name = "vllm"
    structured_output = True  # decoding constrained to Sampling.json_schema

    def __init__(self, model: str = "embedded", max_length: int | None = None, **engine_kwargs: Any):
        """``model``: ``embedded`` or a local model folder / hub id; ``engine_kwargs`` go to ``vllm.LLM``
        (prefix caching defaults to off); ``max_length``: truncation for scoring (default: the
        engine's max_model_len - 1, leaving room for the one generated token)."""
        try:
            import vllm
        except ImportError:
            raise MissingExtra("vllm", "vllm") from None
        if model == "tiny":
            raise ValueError("the tiny test model lives in memory only; vLLM needs a model folder")
        from pipelines.llm.embedded import resolve_model_path

        self._vllm = vllm
        self.model_id = model
        self.model = None  # weights live in the vLLM engine, not in this process
        self.usage = Usage()  # running total of this backend's calls (pipelines/llm/usage.py)
        engine_kwargs.setdefault("enable_prefix_caching", False)
        self.llm = vllm.LLM(model=resolve_model_path(model), **engine_kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        if max_length is None:
            try:
                max_length = int(self.llm.llm_engine.model_config.max_model_len) - 1
            except AttributeError:
                max_length = 1024
        self.max_length = max_length
        # Stop at EOS and at ChatML's end of turn, as the hf backend does.
        stop_ids = {self.tokenizer.eos_token_id}
        im_end = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        if im_end != getattr(self.tokenizer, "unk_token_id", None):  # unk: no such token here
            stop_ids.add(im_end)
        self._stop_ids = sorted(t for t in stop_ids if isinstance(t, int) and t >= 0)

    def _prompt_ids(self, prompt: Prompt) -> list[int]:
        from pipelines.llm.nll import render_chat

        text = prompt if isinstance(prompt, str) else render_chat(self.tokenizer, prompt)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def generate(self, prompts: Sequence[Prompt], sampling: Sampling, progress: Progress | None = None) -> list[str]:
        """Texts in input order (vLLM batches and schedules them itself)."""
        inputs = [{"prompt_token_ids": self._prompt_ids(p)} for p in prompts]
        params = [
            self._vllm.SamplingParams(**sampling_params_kwargs(sampling, i, self._stop_ids),
                                      **structured_kwargs(self._vllm, sampling.json_schema))
            for i in range(len(inputs))
        ]
        with metered(self, len(inputs)) as usage:
            outputs = self.llm.generate(inputs, params, use_tqdm=False)
            usage.prompt_tokens += sum(len(i["prompt_token_ids"]) for i in inputs)
            usage.completion_tokens += sum(len(getattr(o.outputs[0], "token_ids", None) or ()) for o in outputs)
        if progress:
            progress(len(outputs))
        return [o.outputs[0].text.strip() for o in outputs]

    def loss(self, requests: Sequence[LossRequest], want_hidden: bool = False, attn_layer: int | None = None,
             progress: Progress | None = None) -> list[LossResult]:
        """Per-token NLL of each completion given its prompt, from prompt logprobs."""
        from pipelines.llm.nll import encode

        no_extras(self.name, want_hidden, attn_layer)

        encoded = [encode(self.tokenizer, r, max_length=self.max_length) for r in requests]
        inputs = [{"prompt_token_ids": e.prompt_ids + e.completion_ids} for e in encoded]
        params = self._vllm.SamplingParams(**LOSS_PARAMS_KWARGS)
        with metered(self, len(inputs)) as usage:
            outputs = self.llm.generate(inputs, params, use_tqdm=False)
            usage.prompt_tokens += sum(len(i["prompt_token_ids"]) for i in inputs)
        if progress:
            progress(len(outputs))
        return [
            LossResult(completion_nll(o.prompt_logprobs, inp["prompt_token_ids"], len(e.prompt_ids)))
            for o, inp, e in zip(outputs, inputs, encoded, strict=True)
        ]
