"""HFBackend's CTranslate2 generation engine on the tiny in-process model (skipped without ctranslate2).

Greedy parity with hf is checked on a float32 conversion: the int8 one (the default for the
embedded model) rounds the weights, so its greedy tokens legitimately differ from the fp32 hf model.
"""

from __future__ import annotations

import pytest

pytest.importorskip("ctranslate2")

from pipelines.llm.base import Sampling  # noqa: E402
from pipelines.llm.ct2 import _shared_prefix, _split_by_spread  # noqa: E402
from pipelines.llm.hf import HFBackend, resolve_generation_engine  # noqa: E402
from pipelines.llm.tiny import tiny_model, tiny_tokenizer  # noqa: E402

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
def tiny_folder(tmp_path_factory):
    """The tiny model and tokenizer saved as a transformers folder (what the converter reads)."""
    tok = tiny_tokenizer()
    model = tiny_model(tok)
    path = tmp_path_factory.mktemp("tiny-hf")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path, model, tok


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("INSTRUCT_FORGE_CACHE", str(tmp_path / "cache"))


def _pair(tiny_folder, batch: int = 2):
    path, model, tok = tiny_folder
    hf = HFBackend(model, tok, generation_engine="hf", generation_batch_size=batch)
    ct2 = HFBackend(
        model,
        tok,
        generation_engine="ct2",
        model_path=str(path),
        ct2_quantization=None,
        generation_batch_size=batch,
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
        got = engine.generate([ids], greedy, 0, eos, threads=1)[0]
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


def test_in_memory_model_converts_to_a_temporary_folder(tmp_path):
    tok = tiny_tokenizer()
    llm = HFBackend(tiny_model(tok), tok, generation_engine="ct2", generation_batch_size=3)
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
