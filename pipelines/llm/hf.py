"""transformers backend (CPU or GPU): batched generation and batched scoring.

    from pipelines.llm import make_backend
    llm = make_backend("hf", model="embedded")        # or "tiny", or a local model folder
    llm.generate([[{"role": "user", "content": "Hi"}]], Sampling(max_tokens=32))

Generation runs on one of two engines behind the same ``generate()`` (``generation_engine``):

* ``"hf"``: ``model.generate`` on the transformers model.
* ``"ct2"``: CTranslate2 int8 on CPU (``pipelines/llm/ct2.py``), on a conversion of the model's
  folder cached under the model cache, several batches at once (one per core by default:
  ``ct2_threads`` / ``ct2_intra_threads``, see ``pipelines.llm.ct2.thread_layout``).
* ``"auto"`` (default): ``ct2`` for the embedded model on CPU when ``ctranslate2`` is importable,
  else ``hf``. The tiny test model, other folders and GPUs stay on ``hf`` unless ``"ct2"`` is
  asked for. Measured with ``python -m benchmarks.generation`` (default command) on this project's
  2-core CPU (32 Bonito prompts of ~253 tokens, temperature 0.7, up to 64 tokens out): ct2 int8
  batch 16, one single-threaded batch per core, 100.6 tok/s vs hf fp32 batch 1 12.7 (7.95x).
  int8 did not hurt the model's fit: mean NLL 3.680 vs 3.686 (fp32) on the sample passages.

The ct2 engine samples from its own (int8) logits, so its texts differ from hf's for the same seed;
each engine on its own is reproducible.

Scoring (``loss``) runs on one of two engines too (``scoring_engine``):

* ``"hf"``: the fp32 transformers scorer (``pipelines/llm/nll.py``).
* ``"ct2"``: requests that want only token NLLs (no ``want_hidden``, no ``attn_layer``) are scored
  by CTranslate2 (``score_batch``) on the same conversion as generation (int8 unless
  ``ct2_quantization=None``), with the same tokens: ``nll.encode`` renders, truncates and masks
  them exactly as the torch path does. Requests with hidden states or attention stay on the
  transformers model. int8 moves token NLLs by a few hundredths of a nat (tests/test_llm_ct2.py).
* ``"auto"`` (default): ``ct2`` on CPU for the embedded model and the models trained from it
  (``scoring_base``: CoLoR's conditional model), else ``hf``.
* The requests with hidden states (target_sim, otd) run on the transformers model in
  ``hidden_dtype``: ``"auto"`` is bfloat16 where scoring runs on ct2 and the CPU multiplies bf16
  natively (AVX512-BF16 or AMX; elsewhere bf16 is emulated and slower than fp32), else float32.
  Measured on this project's 2-core CPU (128 T0 rows + 20 target rows, SmolLM2-135M, same process):
  2.3-2.6x faster than fp32, target_sim's ranking Spearman 0.9998 and the loss's 0.9995 against
  fp32 (torch's dynamic int8 was 3.3x faster but 0.76: too coarse for a cosine of pooled states). Measured with ``python -m
  benchmarks.scorer`` (default command, quiet 2-core machine, 1030 s): fp32 492 tok/s, ct2 int8
  1459 (``speedup_int8=2.96``), Spearman between the engines' scores on the same
  rows 0.9956 (IFD), 0.9812 (ctx_loss), 0.9993 (CoLoR-like): the >= 2x at >= 0.98 bar it had to
  clear before becoming the CPU default.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from pipelines.llm.base import LossRequest, LossResult, Prompt, Sampling
from pipelines.llm.hf_choices import (
    CT2_MIN_BATCHES,
    cut_batches,
    resolve_generation_engine,
    resolve_hidden_dtype,
    resolve_scoring_engine,
)
from pipelines.llm.nll import encode, render_chat, score_requests
from pipelines.llm.usage import Usage, generated_length, metered


class HFBackend:
    name = "hf"
    structured_output = False  # answers to a json_schema are parsed and repaired by the caller

    def __init__(
        self,
        model,
        tokenizer,
        model_id: str = "custom",
        generation_batch_size: int = 16,
        token_budget: int = 8192,
        max_length: int = 1024,
        generation_dtype: str | None = None,
        generation_engine: str = "auto",
        model_path: str | None = None,
        ct2_quantization: str | None = "int8",
        ct2_threads: int | None = None,
        ct2_intra_threads: int | None = None,
        ct2_max_prompt_spread: int | None = 16,
        scoring_engine: str = "auto",
        scoring_base: str | None = None,
        hidden_dtype: str = "auto",
    ):
        self.model, self.tokenizer, self.model_id = model, tokenizer, model_id
        self.generation_batch_size = generation_batch_size
        # Generation may run on a lower-precision copy (e.g. "bfloat16"), while scoring keeps
        # self.model. On this project's AMX CPU a bare bf16 forward pass of SmolLM2-135M was 3.7x
        # (prefill) and 1.9x (one-token step) faster than fp32, but end to end through generate()
        # it was not faster on a busy 2-core machine: measure with benchmarks.generation before
        # turning it on. The copy costs the model's size again in memory, so it is opt-in.
        self.generation_dtype = generation_dtype
        self._gen_model = None
        self.token_budget, self.max_length = token_budget, max_length
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        # The engine generate() runs ("hf" or "ct2"; "auto" is resolved here, see the module doc).
        # The ct2 engine converts ``model_path`` (default: the model's own folder, else a
        # temporary save of the in-memory weights) once, on the first generate(); like the
        # generation_dtype copy it does not follow later changes to self.model's weights
        # (set ``self._ct2 = None`` after changing them). generation_dtype applies to hf only.
        self.generation_engine = resolve_generation_engine(generation_engine, model_id, self.device)
        self.model_path = model_path
        self.ct2_quantization = ct2_quantization
        # ct2 cores in all (None: every core this process may run on) and threads per batch
        # (None: 1); batches at once = ct2_threads // ct2_intra_threads (pipelines.llm.ct2.thread_layout).
        self.ct2_threads, self.ct2_intra_threads = ct2_threads, ct2_intra_threads
        self.scoring_engine = resolve_scoring_engine(scoring_engine, model_id, self.device, scoring_base)
        # The precision of the requests with hidden states (a copy of the model, made on first use).
        self.hidden_dtype = resolve_hidden_dtype(hidden_dtype, self.scoring_engine, self.device)
        self._hidden_model = None
        self.ct2_max_prompt_spread = ct2_max_prompt_spread
        self._ct2 = None
        self._ct2_tmp = None
        self.usage = Usage()  # running total of this backend's calls (pipelines/llm/usage.py)

    @classmethod
    def load(
        cls,
        model: str = "embedded",
        device: str | None = None,
        eager_attention: bool = False,
        generation_engine: str = "auto",
        **kwargs,
    ):
        """Load ``model`` (embedded, tiny or a local folder); ``generation_engine`` / ``scoring_engine`` "hf" | "ct2" | "auto"."""
        from pipelines.llm.embedded import TINY, load_model_and_tokenizer, resolve_model_path

        mdl, tok = load_model_and_tokenizer(model, device=device, eager_attention=eager_attention)
        path = None if model == TINY else resolve_model_path(model)
        kwargs.setdefault("model_path", path if path and Path(path).is_dir() else None)
        return cls(mdl, tok, model_id=model, generation_engine=generation_engine, **kwargs)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def generation_model(self):
        """The model generate() runs: self.model, or its ``generation_dtype`` copy (made once;
        set ``self._gen_model = None`` after changing self.model's weights)."""
        dtype = getattr(torch, self.generation_dtype) if self.generation_dtype else None
        if dtype is None or dtype == next(self.model.parameters()).dtype:
            return self.model
        if self._gen_model is None:
            import copy

            self._gen_model = copy.deepcopy(self.model).to(dtype).eval()
        return self._gen_model

    def hidden_model(self):
        """The model the requests with hidden states run on: self.model, or its ``hidden_dtype``
        copy (made once; set ``self._hidden_model = None`` after changing self.model's weights)."""
        dtype = getattr(torch, self.hidden_dtype)
        if dtype == next(self.model.parameters()).dtype:
            return self.model
        if self._hidden_model is None:
            import copy

            self._hidden_model = copy.deepcopy(self.model).to(dtype).eval()
        return self._hidden_model

    def ct2_engine(self):
        """The CTranslate2 engine generate() uses when ``generation_engine == "ct2"`` (made once)."""
        if self._ct2 is None:
            from pipelines.llm.ct2 import CT2Engine, thread_layout
            from pipelines.llm.embedded import ct2_model_dir

            if self.ct2_quantization not in (None, "int8"):
                raise ValueError(f"ct2_quantization must be 'int8' or None, not {self.ct2_quantization!r}")
            source = self.model_path or getattr(self.model, "name_or_path", None)
            if source and (Path(source) / "config.json").exists():
                out = ct2_model_dir(source, self.ct2_quantization)
            else:  # in-memory weights (the tiny model, a fine-tuned copy): convert a temporary save
                out = self._convert_in_memory()
            compute = "int8" if self.ct2_quantization == "int8" else "float32"
            inter, intra = thread_layout(self.ct2_threads, self.ct2_intra_threads)
            self._ct2 = CT2Engine(out, self.tokenizer, compute_type=compute, max_prompt_spread=self.ct2_max_prompt_spread,
                                  inter_threads=inter, intra_threads=intra)
        return self._ct2

    def _convert_in_memory(self) -> Path:
        import tempfile

        from ctranslate2.converters import TransformersConverter

        self._ct2_tmp = tempfile.TemporaryDirectory(prefix="instruct-forge-ct2-")
        src, out = Path(self._ct2_tmp.name) / "hf", Path(self._ct2_tmp.name) / "ct2"
        self.model.save_pretrained(src, safe_serialization=True)
        self.tokenizer.save_pretrained(src)
        TransformersConverter(str(src)).convert(str(out), quantization=self.ct2_quantization)
        return out

    def _prompt_text(self, prompt: Prompt) -> str:
        return prompt if isinstance(prompt, str) else render_chat(self.tokenizer, prompt)

    @torch.inference_mode()
    def generate(
        self, prompts: Sequence[Prompt], sampling: Sampling, progress: Callable[[int], None] | None = None
    ) -> list[str]:
        """Texts for ``prompts`` in input order. Prompts are length-sorted into batches (left padding).

        The seed is set per batch from ``sampling.seed`` and the batch's first prompt index, so
        the same call gives the same texts.
        """
        with metered(self, len(prompts)) as usage:
            return self._generate(prompts, sampling, progress, usage)

    def _generate(self, prompts: Sequence[Prompt], sampling: Sampling, progress: Callable[[int], None] | None,
                  usage: Usage) -> list[str]:
        texts = [self._prompt_text(p) for p in prompts]
        tok = self.tokenizer
        ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
        usage.prompt_tokens += sum(len(i) for i in ids)
        order = sorted(range(len(texts)), key=lambda i: (-len(ids[i]), i))
        out: list[str] = [""] * len(texts)
        tok.padding_side = "left"
        eos = [t for t in {tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")} if isinstance(t, int) and t >= 0]
        eos.sort()
        ct2 = self.generation_engine == "ct2"
        batches = cut_batches(order, self.generation_batch_size, CT2_MIN_BATCHES if ct2 else 1)
        seeds = [sampling.seed * 1_000_003 + batch[0] for batch in batches]
        if ct2 and batches:  # every batch handed over at once: they run in parallel
            news = self.ct2_engine().generate([[ids[i] for i in b] for b in batches], sampling, seeds, eos, progress)
            for batch, new in zip(batches, news, strict=True):
                self._decode_into(out, batch, new, sampling, eos, usage)
            return out
        model = self.generation_model()
        for batch, seed in zip(batches, seeds, strict=True):
            new = self._hf_batch(model, [texts[i] for i in batch], sampling, seed, eos)
            self._decode_into(out, batch, new, sampling, eos, usage)
            if progress:
                progress(len(batch))
        return out

    def _decode_into(self, out: list[str], batch: list[int], new, sampling: Sampling, eos: list[int], usage: Usage) -> None:
        for row, i in enumerate(batch):
            usage.completion_tokens += generated_length(new[row], eos)
            out[i] = _cut_at_stop(self.tokenizer.decode(new[row], skip_special_tokens=True), sampling.stop)

    def _hf_batch(self, model, texts: list[str], sampling: Sampling, seed: int, eos: list[int]) -> torch.Tensor:
        """New token ids (padded after an end token) for one left-padded batch on the hf engine."""
        tok = self.tokenizer
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        enc = {k: v.to(self.device) for k, v in enc.items()}
        torch.manual_seed(seed)
        do_sample = sampling.temperature > 0
        gen = model.generate(
            **enc,
            max_new_tokens=sampling.max_tokens,
            do_sample=do_sample,
            temperature=sampling.temperature if do_sample else None,
            top_p=sampling.top_p if do_sample else None,
            top_k=None,
            pad_token_id=tok.pad_token_id,
            eos_token_id=eos,
        )
        return gen[:, enc["input_ids"].shape[1] :]

    def loss(
        self,
        requests: Sequence[LossRequest],
        want_hidden: bool = False,
        attn_layer: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> list[LossResult]:
        with metered(self, len(requests)) as usage:
            if self.scoring_engine == "ct2" and not want_hidden and attn_layer is None:
                results = self._ct2_loss(requests, progress, counted := [])
                usage.prompt_tokens += sum(counted)
                return results
            results = score_requests(
                self.hidden_model() if want_hidden and attn_layer is None else self.model,
                self.tokenizer,
                requests,
                token_budget=self.token_budget,
                max_length=self.max_length,
                want_hidden=want_hidden,
                attn_layer=attn_layer,
                progress=progress,
                lengths=(counted := []),
            )
            usage.prompt_tokens += sum(counted)  # every token read: prompt and completion
        return results


    def _ct2_loss(self, requests: Sequence[LossRequest], progress, lengths: list[int]) -> list[LossResult]:
        """Token NLLs of the completions through CTranslate2: same encode (template, truncation), same mask."""
        items = [encode(self.tokenizer, r, self.max_length) for r in requests]
        lengths += [it.length for it in items]
        logps = self.ct2_engine().score([it.prompt_ids + it.completion_ids for it in items], self.token_budget, progress)
        # logp[k] scores token k + 1: the completion's tokens are positions p .. p + c - 1.
        return [
            LossResult(-lp[len(it.prompt_ids) - 1 : it.length - 1])
            for it, lp in zip(items, logps, strict=True)
        ]


def _cut_at_stop(text: str, stops: Sequence[str]) -> str:
    cut = min((text.find(s) for s in stops if s and s in text), default=-1)
    return (text[:cut] if cut >= 0 else text).strip()
