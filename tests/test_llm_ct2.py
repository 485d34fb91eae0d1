"""HFBackend's CTranslate2 engine (generation and scoring) on the tiny in-process model.

Greedy parity with hf is checked on a float32 conversion: the int8 one (the default for the
embedded model) rounds the weights, so its greedy tokens legitimately differ from the fp32 hf model.
"""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.llm.base import Sampling
from pipelines.llm.ct2 import _shared_prefix, _split_by_spread, thread_layout
from pipelines.llm.hf import HFBackend, resolve_generation_engine

PROMPTS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [
        {
            "role": "user",
            "content": "Summarise the text: photosynthesis converts light energy into chemical energy.",
        }
    ],
    "The quick brown fox",
    [
        {"role": "system", "content": "Answer yes or no."},
        {"role": "user", "content": "Is a contract an agreement?"},
    ],
    [{"role": "user", "content": "Write a homework question about linear algebra."}],
]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory, tiny):
    """The tiny model and tokenizer saved as a transformers folder (what the converter reads)."""
    model, tok = tiny.pair()
    path = tmp_path_factory.mktemp("tiny-hf")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path, model, tok


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("INSTRUCT_FORGE_CACHE", str(tmp_path / "cache"))


def _pair(tiny_folder, batch: int = 2, **ct2_options):
    path, model, tok = tiny_folder
    hf = HFBackend(model, tok, generation_engine="hf", generation_batch_size=batch)
    ct2 = HFBackend(
        model,
        tok,
        generation_engine="ct2",
        model_path=str(path),
        ct2_quantization=None,
        generation_batch_size=batch,
        **ct2_options,
    )
    return hf, ct2


def test_greedy_ct2_equals_hf_token_for_token(tiny_folder):
    hf, ct2 = _pair(tiny_folder, batch=1)
    tok = hf.tokenizer
    greedy = Sampling(temperature=0.0, max_tokens=12)
    eos = sorted({tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")})
    engine = ct2.ct2_engine()
    for prompt in PROMPTS[:3]:
        text = hf._prompt_text(prompt)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        want = [t for t in hf._hf_batch(hf.model, [text], greedy, 0, eos)[0].tolist() if t not in eos]
        got = engine.generate([[ids]], greedy, [0], eos)[0][0]
        assert got == want and len(got) > 0
    want = hf.generate(PROMPTS, greedy)
    assert ct2.generate(PROMPTS, greedy) == want
    # batched, one ct2 call: the chat template's shared prefix is forwarded once (static prompt)
    chats = [p for p in PROMPTS if not isinstance(p, str) and p[0]["role"] == "user"]
    shared = _shared_prefix([tok.convert_ids_to_tokens(tok(hf._prompt_text(p))["input_ids"]) for p in chats])
    assert shared >= 8
    want = hf.generate(chats, greedy)
    ct2.generation_batch_size = len(chats)
    engine.max_prompt_spread = None
    assert ct2.generate(chats, greedy) == want
    engine.share_prefix = False
    assert ct2.generate(chats, greedy) == want


def test_seeded_sampling_is_reproducible(tiny_folder):
    _, ct2 = _pair(tiny_folder)
    s = Sampling(temperature=1.0, top_p=0.95, max_tokens=16, seed=3)
    first = ct2.generate(PROMPTS, s)
    ct2.generate(PROMPTS, Sampling(temperature=1.0, max_tokens=16, seed=4))  # other draws in between
    ct2.generate(PROMPTS, Sampling(temperature=0.0, max_tokens=4))
    assert ct2.generate(PROMPTS, s) == first
    assert ct2.generate(PROMPTS, Sampling(temperature=1.0, top_p=0.95, max_tokens=16, seed=5)) != first


def test_order_is_preserved_and_progress_is_per_batch(tiny_folder):
    _, ct2 = _pair(tiny_folder, batch=2)
    greedy = Sampling(temperature=0.0, max_tokens=8)
    calls: list[int] = []
    out = ct2.generate(PROMPTS, greedy, progress=calls.append)
    assert calls == [2, 2, 1]
    assert ct2.generate(PROMPTS[::-1], greedy) == out[::-1]
    one = [ct2.generate([p], greedy)[0] for p in PROMPTS]
    assert out == one
    assert all(t == t.strip() for t in out)
    assert ct2.generate([], greedy) == []
    assert ct2.generate(PROMPTS[:2], Sampling(temperature=0.0, max_tokens=0)) == ["", ""]


def test_stop_strings_cut_the_text(tiny_folder):
    _, ct2 = _pair(tiny_folder)
    outs = ct2.generate(PROMPTS, Sampling(temperature=0.0, max_tokens=12))
    k = max(range(len(outs)), key=lambda i: len(outs[i]))
    full = outs[k]
    assert len(full) > 4
    stop = full[2:4]
    cut = ct2.generate(PROMPTS[k : k + 1], Sampling(temperature=0.0, max_tokens=12, stop=(stop,)))[0]
    assert cut == full[: full.find(stop)].strip()


def test_conversion_is_cached_and_reused(tiny_folder, tmp_path, monkeypatch):
    from ctranslate2.converters import TransformersConverter

    path, _, _ = tiny_folder
    calls: list[str] = []
    real = TransformersConverter.convert

    def counting(self, output_dir, *a, **k):
        calls.append(output_dir)
        return real(self, output_dir, *a, **k)

    monkeypatch.setattr(TransformersConverter, "convert", counting)
    dirs = []
    for _ in range(2):
        llm = HFBackend.load(str(path), device="cpu", generation_engine="ct2")
        assert llm.generation_engine == "ct2"
        assert llm.generate(PROMPTS[:2], Sampling(temperature=0.0, max_tokens=4)) is not None
        dirs.append(llm.ct2_engine().model_dir)
    assert len(calls) == 1 and dirs[0] == dirs[1]
    cache = tmp_path / "cache"
    names = [p.name for p in cache.iterdir()]
    assert names == [dirs[0].rsplit("/", 1)[-1]] and "-int8-" in names[0]  # atomic: no temp folder left
    assert (cache / names[0] / "model.bin").exists()


def test_conversion_with_the_heap_frozen_writes_the_same_bytes(tiny_folder, tmp_path):
    """ct2_model_dir freezes the heap while converting (speed only): the files equal a plain
    conversion's, and the heap is unfrozen afterwards."""
    import gc

    from ctranslate2.converters import TransformersConverter

    from pipelines.llm.embedded import ct2_model_dir

    path, _, _ = tiny_folder
    plain = tmp_path / "plain"
    TransformersConverter(str(path), low_cpu_mem_usage=True).convert(str(plain), quantization="int8")
    frozen = ct2_model_dir(path, "int8")
    assert gc.get_freeze_count() == 0
    assert sorted(p.name for p in frozen.iterdir()) == sorted(p.name for p in plain.iterdir())
    assert all((frozen / p.name).read_bytes() == p.read_bytes() for p in plain.iterdir())


def test_in_memory_model_converts_to_a_temporary_folder(tmp_path, tiny):
    llm = tiny.hf(generation_engine="ct2", generation_batch_size=3)
    out = llm.generate(PROMPTS, Sampling(temperature=0.7, max_tokens=6, seed=1))
    assert len(out) == len(PROMPTS) and all(isinstance(t, str) for t in out)
    assert not (tmp_path / "cache").exists()  # nothing cached for weights without a folder


def test_auto_engine_choice(monkeypatch):
    assert resolve_generation_engine("auto", "embedded", "cpu") == "ct2"
    assert resolve_generation_engine("auto", "tiny", "cpu") == "hf"
    assert resolve_generation_engine("auto", "some/folder", "cpu") == "hf"
    assert resolve_generation_engine("auto", "embedded", "cuda") == "hf"
    assert resolve_generation_engine("hf", "embedded", "cpu") == "hf"
    assert resolve_generation_engine("ct2", "tiny", "cpu") == "ct2"
    with pytest.raises(ValueError, match="generation engine"):
        resolve_generation_engine("fast", "embedded", "cpu")
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "ctranslate2" else real(n, *a)
    )
    assert resolve_generation_engine("auto", "embedded", "cpu") == "hf"
    assert HFBackend.load("tiny", device="cpu").generation_engine == "hf"


def test_split_by_spread_and_shared_prefix():
    assert _split_by_spread([30, 28, 20, 19, 5], 3) == [(0, 2), (2, 4), (4, 5)]
    assert _split_by_spread([30, 28, 20], None) == [(0, 3)]
    assert _split_by_spread([], 4) == []
    assert _shared_prefix([["a", "b", "c"], ["a", "b", "d"], ["a", "b"]]) == 2
    assert _shared_prefix([["a"], ["b"]]) == 0


def test_thread_layout_follows_the_machine(monkeypatch, tiny):
    import os

    assert thread_layout(4) == (4, 1)
    assert thread_layout(4, 2) == (2, 2)
    assert thread_layout(1, 2) == (1, 2)  # never zero batches at once
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    assert thread_layout() == (3, 1)
    llm = tiny.hf(generation_engine="ct2", ct2_threads=4, ct2_intra_threads=2)
    engine = llm.ct2_engine()
    assert (engine.inter_threads, engine.intra_threads) == (2, 2)


def test_ct2_leaves_torch_threads_alone(tiny_folder):
    """A ctranslate2 generator sets its OpenMP thread count on the calling thread, which torch shares."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        _, ct2 = _pair(tiny_folder, ct2_threads=2)  # 2 x 1: intra_threads 1
        ct2.generate(PROMPTS, Sampling(temperature=0.0, max_tokens=2))
        ct2.generate(PROMPTS, Sampling(temperature=1.0, max_tokens=2))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("layout", [(3, 1), (2, 2)])
def test_parallel_batches_equal_the_sequential_path(tiny_folder, layout):
    """Batches running side by side give what one batch at a time gives: greedy and seeded sampling."""
    prompts = PROMPTS * 3  # 8 batches of 2
    _, seq = _pair(tiny_folder, batch=2, ct2_threads=1)
    _, par = _pair(tiny_folder, batch=2, ct2_threads=layout[0] * layout[1], ct2_intra_threads=layout[1])
    assert (seq.ct2_engine().inter_threads, par.ct2_engine().inter_threads) == (1, layout[0])
    for s in (
        Sampling(temperature=0.0, max_tokens=10),
        Sampling(temperature=1.0, top_p=0.9, max_tokens=10, seed=7),
    ):
        calls: list[int] = []
        want = seq.generate(prompts, s)
        assert par.generate(prompts, s, progress=calls.append) == want
        assert sorted(calls) == [1] + [2] * 7
        assert par.generate(prompts[::-1], s)[::-1] == want or s.temperature > 0  # greedy: order-free


def _score_requests():
    from pipelines.llm.base import LossRequest

    reqs = [LossRequest(p, f"Paris is the capital. {'It is big. ' * i}") for i, p in enumerate(PROMPTS)]
    reqs += [
        LossRequest("", "hello world"),
        LossRequest("x " * 80, "a long prompt, cut"),
        LossRequest("hi", ""),
    ]
    return reqs


@pytest.mark.parametrize(("quantization", "atol"), [(None, 1e-5), ("int8", 0.02)])
def test_ct2_scoring_matches_the_torch_scorer(tiny_folder, quantization, atol):
    """Same tokens, same mask, same truncation. float32 matches to rounding (max 1e-6 seen); int8 rounds
    the weights: max 0.005 nats seen on this model (mean 0.0015, NLLs ~6.3), asserted within 0.02."""
    path, model, tok = tiny_folder
    hf = HFBackend(model, tok, max_length=64, token_budget=200)
    ct2 = HFBackend(
        model,
        tok,
        model_path=str(path),
        ct2_quantization=quantization,
        scoring_engine="ct2",
        max_length=64,
        token_budget=200,
    )
    reqs = _score_requests()
    calls: list[int] = []
    want, got = hf.loss(reqs), ct2.loss(reqs, progress=calls.append)
    assert sum(calls) == len(reqs)
    for w, g in zip(want, got, strict=True):
        assert g.token_nll.shape == w.token_nll.shape
        np.testing.assert_allclose(g.token_nll, w.token_nll, atol=atol)
    assert got[-1].token_nll.size == 0
    assert ct2.usage.prompt_tokens == hf.usage.prompt_tokens


def test_ct2_scoring_leaves_hidden_and_attention_to_torch(tiny_folder):
    path, model, tok = tiny_folder
    ct2 = HFBackend(model, tok, model_path=str(path), ct2_quantization=None, scoring_engine="ct2",
                    hidden_dtype="float32")  # exact equality below (bf16: tests/test_hidden_dtype.py)
    hf = HFBackend(model, tok)
    engine = ct2.ct2_engine()
    engine.score = lambda *a, **k: pytest.fail("hidden states must come from the transformers model")
    reqs = _score_requests()[:3]
    got, want = ct2.loss(reqs, want_hidden=True), hf.loss(reqs, want_hidden=True)
    for w, g in zip(want, got, strict=True):
        np.testing.assert_array_equal(g.token_nll, w.token_nll)
        np.testing.assert_array_equal(g.extras["hidden"], w.extras["hidden"])
    with pytest.raises(ValueError, match="scoring engine"):
        HFBackend(model, tok, scoring_engine="fast")


def test_auto_scores_the_embedded_model_and_its_fine_tunes_with_ct2_on_cpu_only():
    from pipelines.llm.embedded import EMBEDDED, TINY
    from pipelines.llm.hf import resolve_scoring_engine

    assert resolve_scoring_engine("auto", EMBEDDED, "cpu") == "ct2"
    # CoLoR's conditional model, a folder trained from the embedded one: the same engine as its prior.
    assert resolve_scoring_engine("auto", "runs/x/conditional/model", "cpu", base_id=EMBEDDED) == "ct2"
    assert resolve_scoring_engine("auto", "runs/x/conditional/model", "cpu") == "hf"
    assert resolve_scoring_engine("auto", TINY, "cpu") == "hf"
    assert resolve_scoring_engine("auto", EMBEDDED, "cuda") == "hf"
    assert resolve_scoring_engine("hf", EMBEDDED, "cpu") == "hf"


def test_sampled_batches_keep_their_generator_until_collected(tiny_folder):
    """Dropping a ctranslate2.Generator waits for its queued work: a slot whose generator was let go
    right after submitting ran its batch before the next slot could start (2x1 was no faster than 1x1)."""
    _, par = _pair(tiny_folder, batch=2, ct2_threads=2)
    engine = par.ct2_engine()
    alive: set[int] = set()
    in_flight: list[int] = []

    class Held:  # the real generator, and a record of how long the engine holds it
        def __init__(self, gen):
            self.gen = gen
            alive.add(id(self))

        def generate_batch(self, *args, **kwargs):
            in_flight.append(len(alive))
            return self.gen.generate_batch(*args, **kwargs)

        def __del__(self):
            alive.discard(id(self))

    seeded = engine._seeded_generator
    engine._seeded_generator = lambda seed: Held(seeded(seed))
    par.generate(PROMPTS * 2, Sampling(temperature=1.0, max_tokens=4, seed=1))  # 4 batches, 2 slots
    assert max(in_flight) == 2 and not alive


def test_a_small_call_is_cut_in_two_so_both_cores_work(tiny_folder):
    """ct2 runs a call's batches side by side: fewer prompts than a batch holds make two batches,
    as even as can be, the same on any machine; the texts are those of one prompt at a time."""
    from pipelines.llm.hf_choices import cut_batches

    assert cut_batches(list(range(4)), 16, 2) == [[0, 1], [2, 3]]
    assert [len(b) for b in cut_batches(list(range(17)), 16, 2)] == [9, 8]
    assert [len(b) for b in cut_batches(list(range(20)), 16, 1)] == [16, 4]  # the hf engine: as before
    assert cut_batches([5], 16, 2) == [[5]] and cut_batches([], 16, 2) == []
    _, ct2 = _pair(tiny_folder, batch=16)
    greedy = Sampling(temperature=0.0, max_tokens=8)
    calls: list[int] = []
    out = ct2.generate(PROMPTS[:4], greedy, progress=calls.append)
    assert sorted(calls) == [2, 2]
    assert out == [ct2.generate([p], greedy)[0] for p in PROMPTS[:4]]
