"""Batched scorer: per-token NLL of completions given prompts -- the hot path of every selector.

Requests are tokenised (chat prompts with the model's own template), sorted by length and
packed into batches under a token budget (rows x longest row), so padding stays small. Only the
completion positions go through the LM head (its vocab-wide matmul is ~20% of a small model's
FLOPs per token), and prompt tokens are masked out of the loss.

Optionally, from the same forward pass:
* ``hidden``: the mean-pooled last hidden state of the whole sequence (embeddings for diversity),
  and ``hidden_response``: the same pooled over the completion tokens only (target similarity);
  ``hidden_weighted``: over the whole sequence, token i weighted i / sum(1..n) (RDS+'s pooling);
* ``attn_ratio``: the user attention ratio of arXiv 2411.02688 at one probe layer -- for each
  completion token the attention mass on user-content tokens, max over heads, mean over
  completion tokens (needs eager attention; template, system, special and newline tokens are
  not user content).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from pipelines.llm.base import LossRequest, LossResult, Prompt
from pipelines.truncation import truncate_ids


@dataclass
class Encoded:
    prompt_ids: list[int]
    completion_ids: list[int]
    user_mask: list[bool] | None = None  # over prompt tokens: True where the token is user content

    @property
    def length(self) -> int:
        return len(self.prompt_ids) + len(self.completion_ids)


def start_token_id(tokenizer) -> int:
    """The token an empty prompt conditions on (BOS, or EOS for tokenizers without one)."""
    tid = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if tid is None:
        raise ValueError("tokenizer has neither a BOS nor an EOS token to condition an empty prompt on")
    return tid


def render_chat(tokenizer, messages: Sequence[dict]) -> str:
    """Messages -> prompt text ending with the assistant header, using the model's own template."""
    return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)


def _user_content_mask(tokenizer, text: str, content: str) -> tuple[list[int], list[bool]]:
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    start = text.rfind(content) if content else -1
    end = start + len(content)
    special = set(tokenizer.all_special_ids)
    mask = []
    for tid, (a, b) in zip(ids, offsets, strict=True):
        inside = start >= 0 and a >= start and b <= end and b > a
        mask.append(inside and tid not in special and text[a:b].strip() != "")
    return ids, mask


def encode(tokenizer, request: LossRequest, max_length: int = 1024, want_user_mask: bool = False) -> Encoded:
    """Tokenise one request. Prompt and completion are tokenised apart so no merge crosses them.

    Rows over ``max_length`` keep the whole completion up to its cap and the prompt's tail
    (:func:`pipelines.truncation.truncate_ids`).
    """
    prompt: Prompt = request.prompt
    user_mask = None
    if isinstance(prompt, str):
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"] if prompt else []
        if not prompt_ids:
            prompt_ids = [start_token_id(tokenizer)]
    else:
        text = render_chat(tokenizer, prompt)
        if want_user_mask:
            users = [m["content"] for m in prompt if m["role"] == "user"]
            prompt_ids, user_mask = _user_content_mask(tokenizer, text, users[-1] if users else "")
        else:
            prompt_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(request.completion, add_special_tokens=False)["input_ids"]
    # Too long: the project's one rule (pipelines.truncation), so training and evaluation cut the
    # same row the same way. The user mask follows the prompt's kept tail.
    n_prompt = len(prompt_ids)
    prompt_ids, completion_ids, _ = truncate_ids(prompt_ids, completion_ids, max_length)
    if user_mask is not None:
        user_mask = user_mask[n_prompt - len(prompt_ids) :]
    return Encoded(prompt_ids, completion_ids, user_mask)


def plan_batches(lengths: Sequence[int], token_budget: int, max_rows: int = 256) -> list[list[int]]:
    """Indices grouped into batches, longest first, each with rows x longest <= token_budget."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches, current, longest = [], [], 0
    for i in order:
        new_longest = max(longest, lengths[i])
        if current and (new_longest * (len(current) + 1) > token_budget or len(current) >= max_rows):
            batches.append(current)
            current, new_longest = [], lengths[i]
        current.append(i)
        longest = new_longest
    if current:
        batches.append(current)
    return batches


def _decoder_and_head(model):
    """(body returning hidden states, LM head) for the usual *ForCausalLM layout, else None."""
    body = getattr(model, getattr(model, "base_model_prefix", "model"), None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if body is None or head is None or getattr(model.config, "final_logit_softcapping", None):
        return None
    return body, head


class _AttentionProbe:
    """Captures the attention weights of one decoder layer during a forward pass."""

    def __init__(self, model, layer: int):
        layers = model.base_model.layers if hasattr(model.base_model, "layers") else model.model.layers
        self.layer = layer if layer >= 0 else len(layers) + layer
        self.weights = None
        self.handle = layers[self.layer].self_attn.register_forward_hook(self._hook)

    def _hook(self, module, args, output):
        if not isinstance(output, tuple) or len(output) < 2 or output[1] is None:
            raise RuntimeError("attention weights are not returned: load the probe model with eager attention")
        self.weights = output[1].detach()

    def close(self):
        self.handle.remove()


def default_probe_layer(model) -> int:
    """About two thirds of the depth (the paper probes layer 15 of TinyLlama's 22)."""
    return max(0, round(model.config.num_hidden_layers * 2 / 3) - 1)


@torch.inference_mode()
def score_encoded(
    model,
    items: Sequence[Encoded],
    pad_id: int,
    token_budget: int = 8192,
    want_hidden: bool = False,
    attn_layer: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[LossResult]:
    """Score already-tokenised items in length-sorted batches; results in input order."""
    device = next(model.parameters()).device
    split = _decoder_and_head(model)
    probe = _AttentionProbe(model, attn_layer) if attn_layer is not None else None
    results: list[LossResult | None] = [None] * len(items)
    try:
        for batch in plan_batches([it.length for it in items], token_budget):
            width = max(items[i].length for i in batch)
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                seq = items[i].prompt_ids + items[i].completion_ids
                ids[row, : len(seq)] = torch.tensor(seq)
                mask[row, : len(seq)] = 1
            ids, mask = ids.to(device), mask.to(device)
            # Positions whose next-token prediction is a completion token.
            rows, cols, targets = [], [], []
            for row, i in enumerate(batch):
                p, c = len(items[i].prompt_ids), len(items[i].completion_ids)
                rows.extend([row] * c)
                cols.extend(range(p - 1, p + c - 1))
                targets.extend(items[i].completion_ids)
            rows_t, cols_t = torch.tensor(rows, device=device), torch.tensor(cols, device=device)
            if split is not None:
                body, head = split
                hidden = body(input_ids=ids, attention_mask=mask).last_hidden_state
                logits = head(hidden[rows_t, cols_t])
            else:
                out = model(input_ids=ids, attention_mask=mask, output_hidden_states=want_hidden)
                hidden = out.hidden_states[-1] if want_hidden else None
                logits = out.logits[rows_t, cols_t]
            nll = F.cross_entropy(logits.float(), torch.tensor(targets, device=device), reduction="none").cpu().numpy()
            offset = 0
            for row, i in enumerate(batch):
                it = items[i]
                c = len(it.completion_ids)
                extras = {}
                if want_hidden:
                    # Two poolings of the last hidden state: whole sequence, and the completion's
                    # own tokens only (target similarity compares what a row answers).
                    p, seq = len(it.prompt_ids), hidden[row, : it.length].float()
                    extras["hidden"] = seq.mean(0).cpu().numpy()
                    extras["hidden_response"] = seq[p:].mean(0).cpu().numpy()
                    # RDS+'s own pooling: the whole sequence, token i weighted i / sum(1..n)
                    w = torch.arange(1, it.length + 1, dtype=torch.float32, device=seq.device)
                    extras["hidden_weighted"] = ((w / w.sum()) @ seq).cpu().numpy()
                if probe is not None:
                    extras["attn_ratio"] = _attention_ratio(probe.weights[row], it)
                results[i] = LossResult(nll[offset : offset + c].astype(np.float64), extras)
                offset += c
            if progress:
                progress(len(batch))
    finally:
        if probe is not None:
            probe.close()
    return results  # type: ignore[return-value]


def _attention_ratio(weights: torch.Tensor, item: Encoded) -> float:
    """weights: (heads, seq, seq) of one row. Mean over completion tokens of max-over-heads user mass."""
    if item.user_mask is None or not any(item.user_mask):
        return float("nan")
    p, c = len(item.prompt_ids), len(item.completion_ids)
    user_cols = torch.tensor([j for j, u in enumerate(item.user_mask) if u], device=weights.device)
    # Queries at completion tokens (positions p .. p+c-1), keys restricted to user-content tokens.
    mass = weights[:, p : p + c, :].index_select(-1, user_cols).sum(-1)  # (heads, c)
    return float(mass.max(0).values.float().mean())


def score_requests(
    model,
    tokenizer,
    requests: Sequence[LossRequest],
    token_budget: int = 8192,
    max_length: int = 1024,
    want_hidden: bool = False,
    attn_layer: int | None = None,
    progress: Callable[[int], None] | None = None,
    lengths: list[int] | None = None,
) -> list[LossResult]:
    """Tokenise and score ``requests``; see :func:`score_encoded`. ``lengths``, when given, gets
    each row's token count (prompt + completion, after truncation) appended: for usage counts."""
    want_mask = attn_layer is not None
    items = [encode(tokenizer, r, max_length, want_user_mask=want_mask) for r in requests]
    if lengths is not None:
        lengths += [it.length for it in items]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return score_encoded(model, items, pad, token_budget, want_hidden, attn_layer, progress)


@torch.inference_mode()
def reference_nll(model, tokenizer, request: LossRequest, max_length: int = 1024) -> np.ndarray:
    """Unbatched, unoptimised reference: one full forward pass, log-softmax over all positions."""
    it = encode(tokenizer, request, max_length)
    device = next(model.parameters()).device
    ids = torch.tensor([it.prompt_ids + it.completion_ids], device=device)
    logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
    p = len(it.prompt_ids)
    return np.array([-logp[p - 1 + k, t].item() for k, t in enumerate(it.completion_ids)])
