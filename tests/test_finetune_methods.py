"""Each method's mechanics on the tiny model: which parameters get gradients, LISA's switching and
optimizer state, HFT's seeded half, MeZO's gradient-free updates, LoRA/rsLoRA scaling."""

import math
import sys
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from transformers import TrainerCallback

from pipelines.finetune import train_model
from pipelines.finetune.methods import apply_hft, decoder_layers, hft_frozen_names
from pipelines.finetune.mezo import mezo_step, perturb
from pipelines.finetune.target_logits import predicts_target, supports_target_logits, target_loss
from pipelines.schema import make_example, to_table


def _rows(n=16):
    return to_table(
        [
            make_example(
                f"How many apples are in box {i}?",
                f"{i} apples.",
                context=f"Box {i} holds {i} apples.",
                meta={"ctx_dependent": True},
            )
            for i in range(n)
        ]
    )


class Probe(TrainerCallback):
    """Records, per optimizer step, which parameters hold a gradient and which have optimizer state."""

    def __init__(self):
        self.grads, self.state_before = [], []

    def on_step_begin(self, args, state, control, model=None, optimizer=None, **kw):
        opt = getattr(optimizer, "optimizer", optimizer)
        names = {id(p): n for n, p in model.named_parameters()}
        self.state_before.append({names[id(p)] for p in opt.state if id(p) in names})

    def on_pre_optimizer_step(self, args, state, control, model=None, **kw):
        self.grads.append({n for n, p in model.named_parameters() if p.grad is not None})


def _train(model, tok, method, steps=2, learning_rate=None, **options):
    probe = Probe()
    trained, metrics = train_model(
        model,
        tok,
        _rows(),
        method,
        max_steps=steps,
        batch_size=4,
        max_length=128,
        learning_rate=learning_rate,
        options={"callbacks": [probe], "inplace": True, **options},
    )
    return trained, metrics, probe


def test_full_gives_every_parameter_a_gradient(tiny):
    model, tok = tiny.pair(layers=4)
    names = {n for n, _ in model.named_parameters()}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    _, metrics, probe = _train(model, tok, "full")
    assert probe.grads[0] == names
    assert metrics["trainable_params"] == metrics["total_params"]
    assert all(not torch.equal(before[n], p) for n, p in model.named_parameters())


def test_train_model_leaves_the_given_model_alone_by_default(tiny):
    model, tok = tiny.pair(layers=4)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trained, _ = train_model(model, tok, _rows(4), "full", max_steps=1, batch_size=4, learning_rate=1e-2)
    assert trained is not model
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())


def test_lora_gradients_only_on_adapters_and_merged_result(tiny):
    model, tok = tiny.pair(layers=4)
    merged, metrics = train_model(
        model,
        tok,
        _rows(),
        "lora",
        max_steps=2,
        batch_size=4,
        learning_rate=1e-2,
        options={"merge": False, "inplace": False, "callbacks": [probe := Probe()]},
    )
    assert probe.grads[0] and all("lora_" in n for n in probe.grads[0])
    assert metrics["trainable_params"] < metrics["total_params"] / 2
    plain = merged.merge_and_unload()
    assert type(plain) is type(model)
    # The merge moved the base weights of every adapted projection (B is non-zero after two steps).
    changed = [n for n, p in plain.named_parameters() if not torch.equal(p, model.get_parameter(n))]
    assert changed and all(n.split(".")[-2].endswith("_proj") for n in changed)


def test_lora_with_indicator_trains_only_the_new_embedding_row(tiny):
    model, tok = tiny.pair(layers=4)
    probe = Probe()
    trained, _ = train_model(
        model,
        tok,
        _rows(),
        "lora",
        max_steps=2,
        batch_size=4,
        learning_rate=1e-2,
        conditional_indicator=True,
        options={"callbacks": [probe]},
    )
    assert any("trainable_tokens" in n for n in probe.grads[0])
    emb_new = trained.get_input_embeddings().weight
    ind = tok.convert_tokens_to_ids("[IND]")
    assert emb_new.shape[0] == len(tok)
    old_rows = model.get_input_embeddings().weight
    assert torch.equal(emb_new[: old_rows.shape[0]], old_rows)  # other rows untouched
    assert not torch.allclose(emb_new[ind], old_rows.mean(0))  # indicator row moved from its mean init


@pytest.mark.parametrize("rslora", [False, True])
def test_rslora_scaling(tiny, rslora):
    model = tiny.model(layers=4)
    from pipelines.finetune.methods import apply_lora

    peft_model = apply_lora(model, {"lora_r": 4, "lora_alpha": 8, "rslora": rslora})
    q = peft_model.base_model.model.model.layers[0].self_attn.q_proj
    assert q.scaling["default"] == pytest.approx(8 / math.sqrt(4) if rslora else 8 / 4)


def test_hft_half_is_stable_for_a_seed_and_differs_across_seeds(tiny):
    model = tiny.model(layers=4)
    a, b = hft_frozen_names(model, seed=1), hft_frozen_names(model, seed=1)
    assert a == b
    assert any(hft_frozen_names(model, seed=s) != a for s in range(2, 6))
    _, layers = decoder_layers(model)
    mlp_counts = []
    for i in range(len(layers)):
        mine = [n for n in a if f".{i}." in n]
        assert sum("self_attn" in n for n in mine) == 2
        mlp_counts.append(sum(".mlp." in n for n in mine))
    assert all(c in (1, 2) for c in mlp_counts)
    assert all(x != y for x, y in zip(mlp_counts, mlp_counts[1:], strict=False))  # alternating


def test_hft_frozen_half_gets_no_gradient(tiny):
    model, tok = tiny.pair(layers=4)
    frozen = set(hft_frozen_names(model, seed=0))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    _, metrics, probe = _train(model, tok, "hft")
    names = {n for n, _ in model.named_parameters()}
    assert probe.grads[0] == names - frozen
    assert all(torch.equal(before[n], model.get_parameter(n)) for n in frozen)
    assert metrics["hft_frozen"] == len(frozen)
    assert apply_hft(tiny.model(tok, layers=4), seed=0) == sorted(frozen)


def test_lisa_switches_layers_at_the_interval_and_drops_optimizer_state(tiny):
    model, tok = tiny.pair(layers=4)
    _, layers = decoder_layers(model)
    layer_of = {n: int(n.split(".")[2]) for n, _ in model.named_parameters() if n.startswith("model.layers.")}
    always_on = {n for n, _ in model.named_parameters()} - set(layer_of)
    per_layer = len(list(layers[0].parameters()))
    _, metrics, probe = _train(model, tok, "lisa", steps=8, lisa_layers=1, lisa_interval=2, learning_rate=1e-3)

    active = [sorted({layer_of[n] for n in g if n in layer_of}) for g in probe.grads]
    assert all(always_on <= g for g in probe.grads)  # embeddings, head, final norm: every step
    assert all(len(a) == 1 for a in active)
    assert all(active[2 * k] == active[2 * k + 1] for k in range(4))  # fixed within an interval
    assert len({tuple(a) for a in active}) > 1  # and re-drawn at the interval
    assert [step for step, _ in metrics["lisa_history"]] == [0, 2, 4, 6]

    # Optimizer state never holds more than the always-on part plus one layer, and is dropped on refreeze.
    for step, names in enumerate(probe.state_before):
        state_layers = {layer_of[n] for n in names if n in layer_of}
        assert len(names & set(layer_of)) <= per_layer
        assert state_layers <= set(active[step - 1]) if step else not names
    assert metrics["lisa_dropped_states"] > 0
    sizes = [len(s) for s in probe.state_before]
    assert any(b < a for a, b in zip(sizes, sizes[1:], strict=False))  # the state shrank at a switch


def test_mezo_updates_parameters_without_any_grad(tiny):
    model, tok = tiny.pair(layers=4)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trained, metrics = train_model(
        model,
        tok,
        _rows(),
        "mezo",
        max_steps=3,
        batch_size=4,
        learning_rate=1e-3,
        options={"inplace": True},
    )
    assert metrics["steps"] == 3 and metrics["trainable_params"] == metrics["total_params"]
    for n, p in trained.named_parameters():
        assert p.grad is None and not p.requires_grad
        assert not torch.equal(before[n], p), n


def test_mezo_seed_trick_regenerates_the_same_noise(tiny):
    model, tok = tiny.pair(layers=4)
    params = list(model.parameters())
    before = [p.detach().clone() for p in params]
    perturb(params, seed=7, scale=1e-2)
    assert any(not torch.equal(a, p) for a, p in zip(before, params, strict=True))
    perturb(params, seed=7, scale=-1e-2)
    assert all(torch.allclose(a, p, atol=1e-6) for a, p in zip(before, params, strict=True))
    # With lr=0 a full step (+eps, -2eps, +eps) returns to theta.
    batch = {"input_ids": torch.tensor([tok("a b c")["input_ids"]])}
    batch["labels"] = batch["input_ids"].clone()
    mezo_step(model, params, batch, seed=3, lr=0.0, eps=1e-3)
    assert all(torch.allclose(a, p, atol=1e-6) for a, p in zip(before, params, strict=True))


def test_unknown_method_and_option_raise(tiny):
    model, tok = tiny.pair(layers=4)
    with pytest.raises(ValueError, match="unknown method"):
        train_model(model, tok, _rows(2), "dora")
    with pytest.raises(ValueError, match="unknown option"):
        train_model(model, tok, _rows(2), "lora", options={"lora_rank": 8})


def test_cpu_default_micro_batches_with_checkpointing_and_keeps_the_step():
    """On CPU a step of 8 rows runs as 4 forward passes of 2 with checkpointing (memory), and an
    explicit micro_batch that does not divide batch_size is an error."""
    from pipelines.finetune.train import _training_args

    def args(**options):
        return _training_args("/tmp/unused", device=torch.device("cpu"), batch_size=8, epochs=1.0, max_steps=2,
                              learning_rate=1e-4, seed=0, options=options)

    cpu = args()
    assert (cpu.per_device_train_batch_size, cpu.gradient_accumulation_steps, cpu.gradient_checkpointing) == (2, 4, True)
    whole = args(micro_batch=8, gradient_checkpointing=False)
    assert (whole.per_device_train_batch_size, whole.gradient_accumulation_steps) == (8, 1)
    with pytest.raises(ValueError, match="micro_batch 3 must divide batch_size 8"):
        args(micro_batch=3)


def test_micro_batching_and_checkpointing_train_the_same_model(tiny):
    """The same 4-row steps as one pass or two checkpointed passes of 2: the same losses and weights."""
    runs = []
    for options in ({"micro_batch": 4, "gradient_checkpointing": False}, {}):
        model, tok = tiny.pair(layers=4)
        trained, metrics, _ = _train(model, tok, "full", steps=3, **options)
        runs.append((metrics["train_loss"], [p.detach().clone() for p in trained.parameters()]))
    assert math.isclose(runs[0][0], runs[1][0], rel_tol=1e-4)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(runs[0][1], runs[1][1], strict=True))


def test_logits_at_answer_positions_only_train_the_same_model(tiny):
    """The default loss (logits only where an answer token is predicted) against the model's own
    full-sequence loss, over 2 accumulated micro-batches a step: the same losses and weights."""
    runs = []
    for target_logits in (True, False):
        model, tok = tiny.pair(layers=4)
        assert supports_target_logits(model)  # so the first run takes the answer-only path
        trained, metrics, _ = _train(model, tok, "full", steps=3, micro_batch=2, gradient_checkpointing=False,
                                     target_logits=target_logits)
        runs.append((metrics["train_loss"], [p.detach().clone() for p in trained.parameters()]))
    assert math.isclose(runs[0][0], runs[1][0], rel_tol=1e-4)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(runs[0][1], runs[1][1], strict=True))


def test_target_loss_is_the_cross_entropy_of_the_next_answer_tokens():
    torch.manual_seed(0)
    labels = torch.tensor([[-100, -100, 5, 6, -100], [-100, 7, 8, 9, 3]])
    full = torch.randn(2, 5, 11)
    keep = predicts_target(labels)
    assert keep.tolist() == [[False, True, True, False, False], [True, True, True, True, False]]
    want = F.cross_entropy(full[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1), ignore_index=-100)
    got = target_loss(SimpleNamespace(logits=full[keep]), labels)
    assert torch.allclose(got, want)
    assert torch.allclose(target_loss(SimpleNamespace(logits=full[keep]), labels, 12), want * 6 / 12)


def test_training_processes_give_freed_tensors_back_on_glibc():
    import platform

    from pipelines.finetune.heap import return_freed_tensors_to_the_os

    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert return_freed_tensors_to_the_os() is glibc


def test_the_training_heap_setting_is_undone_after_training(monkeypatch):
    """Issue 39: the flow scores after training the conditional model in the same process, so the
    1 MiB threshold is training's only: after it, glibc's own ceiling (32 MiB) and trim (64 MiB)."""
    from pipelines.finetune import heap

    calls = []
    monkeypatch.setattr(heap, "_mallopt", lambda param, value: calls.append((param, value)) or True)

    @heap.with_training_heap
    def train():
        calls.append("training")
        return 7

    assert train() == 7
    assert calls == [(heap.M_MMAP_THRESHOLD, 1 << 20), "training", (heap.M_MMAP_THRESHOLD, 32 << 20),
                     (heap.M_TRIM_THRESHOLD, 64 << 20)]
    calls.clear()
    with pytest.raises(RuntimeError), heap.training_heap():
        raise RuntimeError("a failed training restores it too")
    assert calls[-1] == (heap.M_TRIM_THRESHOLD, 64 << 20)
