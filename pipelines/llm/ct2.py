"""CTranslate2 generation engine for :class:`pipelines.llm.hf.HFBackend` (CPU, int8 by default).

HFBackend stays the one backend object: it renders, tokenises, length-sorts and batches the
prompts, decodes and cuts the texts, and scores on its transformers model. With
``generation_engine="ct2"`` each generation batch runs here instead, on a CTranslate2 conversion of
the same weights (``pipelines.llm.embedded.ct2_model_dir``, converted once and cached).

Reproducible sampling: ctranslate2 4.x has no per-call seed. Its sampler draws from a
``thread_local`` mt19937 seeded from the global seed (``ctranslate2.set_random_seed``) the first
time a thread samples, and generation runs on the generator's own worker thread. So a sampled
batch runs on a freshly created ``ctranslate2.Generator`` (a new worker thread, ~0.1 s to load the
135M int8 model from the page cache), right after setting the batch's seed; greedy batches reuse
one cached generator. A process-wide lock covers seed + load + generation, since the seed is global.

Measured on this project's 2-core CPU (SmolLM2-135M, int8, prompts of ~250 tokens): prefill ~1 ms
per prompt token; a decode step ~20 ms at batch 1, ~40-57 ms at batch 8. Exact top-p over the full
49k vocabulary adds ~4 ms per sequence per step (ctranslate2 sorts it; 87 vs 57 ms at batch 8).
``sampling_topk`` would remove that but truncates nuclei larger than k (at temperature 1.0 the
0.95 nucleus had > 256 tokens at 38% of positions), so sampling stays exact. Intra-op threads:
2 were no faster than 1 even on an idle machine (and two 1-thread generators side by side gave
no more tokens/s than one), so the thread count follows torch's (``model.threads``).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path

from pipelines.llm.base import Sampling

_SEED_LOCK = threading.Lock()


class CT2Engine:
    """Generate token ids for batches of prompt token ids with a converted CTranslate2 model.

    ``max_prompt_spread``: ctranslate2 forwards a batch's prompts at once only up to the shortest
    one; the rest of each longer prompt is fed one decoding step at a time (a step costs ~5x a
    prefill token per sequence here). So a batch is run as consecutive sub-batches whose prompt
    lengths differ by at most this many tokens (None: never split). Sub-batches of one batch
    share that batch's generator and seed, so results stay reproducible.

    ``share_prefix``: the token prefix every prompt of a sub-batch shares (the chat template's
    system turn, a generator's instructions) is forwarded once and its state copied to each row
    (ctranslate2's ``static_prompt``), instead of once per row. Same outputs (greedy texts were
    identical on 16 benchmark prompts), less prefill: 8.0 s instead of 9.0-10.5 s greedy there.
    """

    def __init__(
        self,
        model_dir: str | Path,
        tokenizer,
        compute_type: str = "int8",
        max_prompt_spread: int | None = 16,
        share_prefix: bool = True,
    ):
        import ctranslate2

        self._ct2 = ctranslate2
        self.model_dir, self.tokenizer = str(model_dir), tokenizer
        self.compute_type, self.max_prompt_spread = compute_type, max_prompt_spread
        self.share_prefix = share_prefix
        self._greedy: dict[int, object] = {}  # intra_threads -> cached Generator
        _check_vocabulary(Path(model_dir), tokenizer)

    def _generator(self, threads: int):
        return self._ct2.Generator(
            self.model_dir,
            device="cpu",
            compute_type=self.compute_type,
            inter_threads=1,
            intra_threads=threads,
        )

    def generate(
        self,
        prompt_ids: Sequence[Sequence[int]],
        sampling: Sampling,
        seed: int,
        eos: Sequence[int],
        threads: int,
    ) -> list[list[int]]:
        """New token ids (end tokens dropped) for each prompt, in the given order.

        Prompts should come length-sorted (longest first), as HFBackend batches them.
        """
        if sampling.max_tokens <= 0:
            return [[] for _ in prompt_ids]
        tokens = [self.tokenizer.convert_ids_to_tokens(list(ids)) for ids in prompt_ids]
        opts = dict(
            max_length=sampling.max_tokens,
            include_prompt_in_result=False,
            end_token=list(eos),
            beam_size=1,
        )
        if sampling.temperature > 0:
            opts.update(
                sampling_topk=0, sampling_topp=sampling.top_p, sampling_temperature=sampling.temperature
            )
        else:
            opts.update(sampling_topk=1)
        runs = _split_by_spread([len(t) for t in tokens], self.max_prompt_spread)
        out: list[list[int]] = []
        if sampling.temperature > 0:
            with _SEED_LOCK:
                self._ct2.set_random_seed(seed % 2**32)
                gen = self._generator(threads)  # fresh worker thread: its sampler seeds from `seed`
                for a, b in runs:
                    out += self._run(gen, tokens[a:b], opts)
                del gen
        else:
            gen = self._greedy.get(threads)
            if gen is None:
                gen = self._greedy[threads] = self._generator(threads)
            for a, b in runs:
                out += self._run(gen, tokens[a:b], opts)
        return out

    def _run(self, gen, tokens: list[list[str]], opts: dict) -> list[list[int]]:
        """One generate_batch call; a prefix shared by every prompt is forwarded once (static prompt)."""
        k = _shared_prefix(tokens) if self.share_prefix and len(tokens) > 1 else 0
        k = min(k, min(len(t) for t in tokens) - 1)
        if k >= _MIN_SHARED_PREFIX:
            # Not cached in the model (cache_static_prompt=False): the cache has no bound, and
            # every batch has its own prefix.
            results = gen.generate_batch(
                [t[k:] for t in tokens], static_prompt=tokens[0][:k], cache_static_prompt=False, **opts
            )
        else:
            results = gen.generate_batch(tokens, **opts)
        return [r.sequences_ids[0] for r in results]


_MIN_SHARED_PREFIX = 8


def _shared_prefix(tokens: Sequence[Sequence[str]]) -> int:
    first, k = tokens[0], 0
    while k < len(first) and all(len(t) > k and t[k] == first[k] for t in tokens[1:]):
        k += 1
    return k


def _split_by_spread(lengths: Sequence[int], spread: int | None) -> list[tuple[int, int]]:
    """Consecutive [a, b) runs of ``lengths`` whose max - min is at most ``spread``."""
    if not lengths:
        return []
    if spread is None:
        return [(0, len(lengths))]
    runs, start, lo, hi = [], 0, lengths[0], lengths[0]
    for i, n in enumerate(lengths[1:], 1):
        lo, hi = min(lo, n), max(hi, n)
        if hi - lo > spread:
            runs.append((start, i))
            start, lo, hi = i, n, n
    runs.append((start, len(lengths)))
    return runs


def _check_vocabulary(model_dir: Path, tokenizer) -> None:
    """The converted vocabulary must map token strings to the tokenizer's ids (prompts go in as strings)."""
    path = model_dir / "vocabulary.json"
    if not path.exists():
        return
    vocab = json.loads(path.read_text(encoding="utf-8"))
    n = len(tokenizer)
    if vocab[:n] != tokenizer.convert_ids_to_tokens(list(range(n))):
        raise ValueError(f"{model_dir}: the converted vocabulary does not match the tokenizer's ids")
