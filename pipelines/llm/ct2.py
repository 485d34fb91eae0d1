"""CTranslate2 engine for :class:`pipelines.llm.hf.HFBackend` (CPU, int8 by default): generation and scoring.

HFBackend stays the one backend object: it renders, tokenises, length-sorts and batches the
prompts, decodes and cuts the texts. With ``generation_engine="ct2"`` its generation batches run
here, on a CTranslate2 conversion of the same weights (``pipelines.llm.embedded.ct2_model_dir``,
converted once and cached); with ``scoring_engine="ct2"`` so do its log-prob-only scoring batches
(:meth:`CT2Engine.score`, ctranslate2's ``score_batch``).

Threads: one generation given every core is slower than one given a single core, so the engine
runs ``inter_threads`` batches at once, each on ``intra_threads`` threads, and refills a slot as
soon as a batch finishes. The layout comes from the machine (:func:`thread_layout`: every core
this process may run on, from ``os.sched_getaffinity``, one single-threaded batch per core) unless
the constructor is given one. Batches are what the caller makes them (HFBackend: at most
``generation_batch_size`` prompts, length-sorted, and at least two: ``hf_choices.cut_batches``),
never re-cut by the layout, so a call's output does not depend on the machine: a call with fewer
batches than ``inter_threads`` leaves cores idle.
Measured (``python -m benchmarks.generation``, 2-core CPU, int8, 32 Bonito prompts of ~253 tokens,
temperature 0.7): batch 16 on 1x1 58.9 tok/s, 1x2 50.5, 2x1 100.6; hf fp32 batch 1 12.7.

Reproducible sampling: ctranslate2 4.x has no per-call seed. Its sampler draws from a
``thread_local`` mt19937 seeded from the global seed (``ctranslate2.set_random_seed``) the first
time a thread samples, and a generator samples on its own worker threads. So each sampled batch
gets a freshly created one-worker ``ctranslate2.Generator`` (~0.1 s to load the 135M int8 model
from the page cache; the weights are held once per batch in flight), and under a process-wide lock
the batch's seed is set and the new worker primed with a one-token sampled generation, which
seeds its sampler; the batch itself then runs outside the lock, beside the other slots. A batch's
texts depend on its prompts and seed only, not on the layout or on which batches ran beside it.
Greedy batches (and scoring) share one cached generator with ``inter_threads`` workers.

Measured on this project's 2-core CPU (SmolLM2-135M, int8, prompts of ~250 tokens): prefill ~1 ms
per prompt token; a decode step ~20 ms at batch 1, ~40-57 ms at batch 8. Exact top-p over the full
49k vocabulary adds ~4 ms per sequence per step (ctranslate2 sorts it; 87 vs 57 ms at batch 8).
``sampling_topk`` would remove that but truncates nuclei larger than k (at temperature 1.0 the
0.95 nucleus had > 256 tokens at 38% of positions), so sampling stays exact.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from pipelines.cores import available_cores
from pipelines.llm.base import Sampling

_SEED_LOCK = threading.Lock()


def thread_layout(threads: int | None = None, intra_threads: int | None = None) -> tuple[int, int]:
    """``(inter_threads, intra_threads)`` for ``threads`` cores (None: :func:`available_cores`).

    ``intra_threads`` (default 1) threads per batch, ``threads // intra_threads`` batches at once
    (at least one).
    """
    threads = threads or available_cores()
    intra = intra_threads or 1
    return max(1, threads // intra), intra


class CT2Engine:
    """Generate and score token ids with a converted CTranslate2 model.

    ``inter_threads`` / ``intra_threads``: batches run at once and threads per batch (None: from
    :func:`thread_layout`). Attributes: changing them later takes effect on the next call.

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
        inter_threads: int | None = None,
        intra_threads: int | None = None,
    ):
        import ctranslate2

        self._ct2 = ctranslate2
        self.model_dir, self.tokenizer = str(model_dir), tokenizer
        self.compute_type, self.max_prompt_spread = compute_type, max_prompt_spread
        self.share_prefix = share_prefix
        default_inter, default_intra = thread_layout(None, intra_threads)
        self.inter_threads, self.intra_threads = inter_threads or default_inter, default_intra
        self._shared: dict[tuple[int, int], object] = {}  # (inter, intra) -> cached Generator
        _check_vocabulary(Path(model_dir), tokenizer)

    def _generator(self, inter: int, intra: int):
        # Making a generator calls omp_set_num_threads(intra) on this thread, and torch shares
        # that OpenMP runtime: without the restore, the torch scorer in the same process (hidden
        # states for target_sim, GOT-D) would drop to intra_threads threads.
        torch = sys.modules.get("torch")
        torch_threads = torch.get_num_threads() if torch else None
        try:
            return self._ct2.Generator(
                self.model_dir,
                device="cpu",
                compute_type=self.compute_type,
                inter_threads=inter,
                intra_threads=intra,
                max_queued_batches=-1,  # submitting never blocks: every batch is queued at once
            )
        finally:
            if torch_threads:
                torch.set_num_threads(torch_threads)

    def shared_generator(self):
        """The cached generator of greedy batches and scoring, ``inter_threads`` workers."""
        key = (self.inter_threads, self.intra_threads)
        if key not in self._shared:
            self._shared[key] = self._generator(*key)
        return self._shared[key]

    def _seeded_generator(self, seed: int):
        """A fresh one-worker generator whose sampler is seeded from ``seed`` (see the module doc)."""
        with _SEED_LOCK:
            self._ct2.set_random_seed(seed % 2**32)
            gen = self._generator(1, self.intra_threads)
            # The worker seeds its thread_local sampler on its first draw: draw now, under the lock.
            gen.generate_batch(
                [[self.tokenizer.convert_ids_to_tokens(0)]],
                max_length=1,
                include_prompt_in_result=False,
                sampling_topk=0,
            )
        return gen

    def generate(
        self,
        batches: Sequence[Sequence[Sequence[int]]],
        sampling: Sampling,
        seeds: Sequence[int],
        eos: Sequence[int],
        progress: Callable[[int], None] | None = None,
    ) -> list[list[list[int]]]:
        """New token ids (end tokens dropped) for each prompt of each batch, in the given order.

        ``seeds``: one per batch (used when sampling). Prompts within a batch should come
        length-sorted (longest first), as HFBackend batches them. ``progress(rows)`` is called as
        each batch finishes.
        """
        if sampling.max_tokens <= 0:
            return [[[] for _ in b] for b in batches]
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
        tokens = [[self.tokenizer.convert_ids_to_tokens(list(ids)) for ids in b] for b in batches]
        if sampling.temperature > 0:
            return self._sampled(tokens, seeds, opts, progress)
        gen = self.shared_generator()  # greedy: no seed, every batch queued at once
        pending = [self._submit(gen, t, opts) for t in tokens]
        out = []
        for subs in pending:
            out.append(_collect(subs))
            if progress:
                progress(len(out[-1]))
        return out

    def _sampled(self, tokens: list[list[list[str]]], seeds: Sequence[int], opts: dict, progress) -> list:
        """Each batch on its own seeded generator, ``inter_threads`` at once, a slot refilled when one ends."""
        out: list = [None] * len(tokens)
        running: dict[int, tuple[object, list]] = {}  # batch -> (its generator, its async results)
        todo = iter(range(len(tokens)))
        nxt = next(todo, None)
        while nxt is not None or running:
            while nxt is not None and len(running) < self.inter_threads:
                # Hold the generator until its batch is collected: dropping the last reference to a
                # ctranslate2.Generator waits for its queued work, which made the slots run one by one.
                gen = self._seeded_generator(seeds[nxt])
                running[nxt] = (gen, self._submit(gen, tokens[nxt], opts))
                nxt = next(todo, None)
            done = [i for i, (_, subs) in running.items() if all(r.done() for sub in subs for r in sub)]
            if not done:
                time.sleep(0.002)
            for i in done:
                out[i] = _collect(running.pop(i)[1])  # drops the batch's generator with its results
                if progress:
                    progress(len(out[i]))
        return out

    def _submit(self, gen, tokens: list[list[str]], opts: dict) -> list[list]:
        """Queue one batch as sub-batches of close prompt lengths; their async results, in order."""
        return [
            self._submit_one(gen, tokens[a:b], opts)
            for a, b in _split_by_spread([len(t) for t in tokens], self.max_prompt_spread)
        ]

    def _submit_one(self, gen, tokens: list[list[str]], opts: dict) -> list:
        """One asynchronous generate_batch call; a prefix shared by every prompt is forwarded once (static prompt)."""
        k = _shared_prefix(tokens) if self.share_prefix and len(tokens) > 1 else 0
        k = min(k, min(len(t) for t in tokens) - 1)
        if k >= _MIN_SHARED_PREFIX:
            # Not cached in the model (cache_static_prompt=False): the cache has no bound, and
            # every batch has its own prefix.
            return gen.generate_batch(
                [t[k:] for t in tokens],
                static_prompt=tokens[0][:k],
                cache_static_prompt=False,
                asynchronous=True,
                **opts,
            )
        return gen.generate_batch(tokens, asynchronous=True, **opts)

    def score(
        self,
        sequences: Sequence[Sequence[int]],
        token_budget: int = 8192,
        progress: Callable[[int], None] | None = None,
    ) -> list[np.ndarray]:
        """``log p(ids[k] | ids[:k])`` for k = 1 .. len-1 of each sequence (float64), in input order.

        Sequences are length-sorted into batches under ``token_budget`` (rows x longest, like the
        torch scorer) and all queued at once on the shared generator, ``inter_threads`` batches
        scoring at a time. No truncation here: the caller truncates (pipelines.truncation).
        """
        from pipelines.llm.nll import plan_batches

        out: list = [np.zeros(0)] * len(sequences)
        keep = [i for i, s in enumerate(sequences) if len(s) >= 2]  # a 1-token row has nothing to score
        tokens = {i: self.tokenizer.convert_ids_to_tokens(list(sequences[i])) for i in keep}
        gen = self.shared_generator()
        pending = []
        for batch in plan_batches([len(tokens[i]) for i in keep], token_budget):
            rows = [keep[j] for j in batch]
            pending.append(
                (rows, gen.score_batch([tokens[i] for i in rows], max_input_length=0, asynchronous=True))
            )
        for rows, results in pending:
            for i, r in zip(rows, results, strict=True):
                out[i] = np.asarray(r.result().log_probs, dtype=np.float64)
            if progress:
                progress(len(rows))
        if progress and len(keep) < len(sequences):
            progress(len(sequences) - len(keep))
        return out


def _collect(subs: list[list]) -> list[list[int]]:
    return [r.result().sequences_ids[0] for sub in subs for r in sub]


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
