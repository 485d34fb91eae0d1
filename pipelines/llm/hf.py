"""transformers backend (CPU or GPU): batched generation and batched scoring.

    from pipelines.llm import make_backend
    llm = make_backend("hf", model="embedded")        # or "tiny", or a local model folder
    llm.generate([[{"role": "user", "content": "Hi"}]], Sampling(max_tokens=32))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from pipelines.llm.base import LossRequest, LossResult, Prompt, Sampling
from pipelines.llm.nll import render_chat, score_requests


class HFBackend:
    name = "hf"

    def __init__(
        self,
        model,
        tokenizer,
        model_id: str = "custom",
        generation_batch_size: int = 16,
        token_budget: int = 8192,
        max_length: int = 1024,
        generation_dtype: str | None = None,
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

    @classmethod
    def load(cls, model: str = "embedded", device: str | None = None, eager_attention: bool = False, **kwargs):
        from pipelines.llm.embedded import load_model_and_tokenizer

        mdl, tok = load_model_and_tokenizer(model, device=device, eager_attention=eager_attention)
        return cls(mdl, tok, model_id=model, **kwargs)

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
        texts = [self._prompt_text(p) for p in prompts]
        tok = self.tokenizer
        lengths = [len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts]
        order = sorted(range(len(texts)), key=lambda i: (-lengths[i], i))
        out: list[str] = [""] * len(texts)
        tok.padding_side = "left"
        eos = [t for t in {tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")} if isinstance(t, int) and t >= 0]
        model = self.generation_model()
        for b in range(0, len(order), self.generation_batch_size):
            batch = order[b : b + self.generation_batch_size]
            enc = tok([texts[i] for i in batch], return_tensors="pt", padding=True, add_special_tokens=False)
            enc = {k: v.to(self.device) for k, v in enc.items()}
            torch.manual_seed(sampling.seed * 1_000_003 + batch[0])
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
            new = gen[:, enc["input_ids"].shape[1] :]
            for row, i in enumerate(batch):
                out[i] = _cut_at_stop(tok.decode(new[row], skip_special_tokens=True), sampling.stop)
            if progress:
                progress(len(batch))
        return out

    def loss(
        self,
        requests: Sequence[LossRequest],
        want_hidden: bool = False,
        attn_layer: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> list[LossResult]:
        return score_requests(
            self.model,
            self.tokenizer,
            requests,
            token_budget=self.token_budget,
            max_length=self.max_length,
            want_hidden=want_hidden,
            attn_layer=attn_layer,
            progress=progress,
        )


def _cut_at_stop(text: str, stops: Sequence[str]) -> str:
    cut = min((text.find(s) for s in stops if s and s in text), default=-1)
    return (text[:cut] if cut >= 0 else text).strip()
