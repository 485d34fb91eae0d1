"""Special tokens written into a row's prompt according to a per-row flag or label.

One mechanism serves two recipes:

* conditional instruction fine-tuning (arXiv 2411.02688): ``" [IND]"`` at the *end* of the user
  message of context-dependent rows (:data:`pipelines.finetune.data.INDICATOR_TAG`);
* conditional training with control tokens (Korbak et al. 2023, "Pretraining Language Models with
  Human Preferences"): ``<|good|>`` or ``<|bad|>`` at the *start* of every row's user message, by
  a score threshold (:mod:`pipelines.finetune.control`).

A :class:`PromptTag` names the tokens it may write, where they go, and the function that picks the
token for a row (``None``: leave the row alone). :func:`ensure_tokens` adds the tokens to a
tokenizer as special tokens -- once; calling it again adds nothing -- and grows the model's
embeddings to match; :func:`apply_tags` writes them into a row's messages;
:func:`restore_cut_tokens` puts a tag back when truncation cut the start of a long prompt off.

Try it: ``python -c "from pipelines.finetune.prompt_tags import mark; print(mark([{'role':'user','content':'Hi'}], '<|good|>', 'prefix'))"``
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

Where = Literal["prefix", "suffix"]


@dataclass(frozen=True)
class PromptTag:
    """A special token placed in the last user message of the rows ``choose`` picks."""

    name: str  # how metrics and settings call it
    tokens: tuple[str, ...]  # every token this tag may write; all are added to the tokenizer
    where: Where  # "prefix": start of the user message; "suffix": its end
    choose: Callable[[Mapping[str, Any]], str | None]  # row -> one of ``tokens``, or None (no tag)

    def apply(self, row: Mapping[str, Any], messages: Sequence[Mapping[str, str]]) -> list[dict]:
        token = self.choose(row)
        if token is None:
            return [dict(m) for m in messages]
        if token not in self.tokens:
            raise ValueError(f"{self.name}: {token!r} is not one of {list(self.tokens)}")
        return mark(messages, token, self.where)


def mark(messages: Sequence[Mapping[str, str]], token: str, where: Where) -> list[dict]:
    """Copy of ``messages`` with ``token`` at the start (``prefix``) or end (``suffix``) of the last
    user message, separated by one space. A message that already has it there is left as it is."""
    out = [dict(m) for m in messages]
    users = [i for i, m in enumerate(out) if m["role"] == "user"]
    if not users:
        raise ValueError(f"cannot place {token}: no user message")
    last = out[users[-1]]
    content = last["content"]
    if where == "prefix" and not content.startswith(token):
        last["content"] = token + " " + content
    elif where == "suffix" and not content.endswith(token):
        last["content"] = content + " " + token
    elif where not in ("prefix", "suffix"):
        raise ValueError(f"where must be 'prefix' or 'suffix', got {where!r}")
    return out


def apply_tags(
    row: Mapping[str, Any], messages: Sequence[Mapping[str, str]], tags: Iterable[PromptTag]
) -> list[dict]:
    """``messages`` with every tag's token for ``row`` written in (tags in order)."""
    out = [dict(m) for m in messages]
    for tag in tags:
        out = tag.apply(row, out)
    return out


def ensure_tokens(tokenizer, tokens: Sequence[str], model=None) -> list[int]:
    """Add ``tokens`` to ``tokenizer`` (in place) as special tokens, grow ``model``'s embeddings to
    match, and return their ids. Idempotent: tokens already there are not added again, and
    embeddings already that large are not resized."""
    from tokenizers import AddedToken

    vocab = tokenizer.get_vocab()
    new = [AddedToken(t, special=True, normalized=False) for t in dict.fromkeys(tokens) if t not in vocab]
    if new:
        tokenizer.add_tokens(new, special_tokens=True)
    if model is not None:
        grow_embeddings(model, len(tokenizer))
    return [tokenizer.convert_tokens_to_ids(t) for t in tokens]


def restore_cut_tokens(
    full: Sequence[int], kept: Sequence[int], token_ids: Collection[int]
) -> tuple[list[int], int]:
    """``(kept with the tag tokens the cut removed put back, how many)``.

    ``kept`` is the tail of ``full`` that truncation left (:mod:`pipelines.truncation` keeps a
    prompt's tail, so a *prefix* tag is the first thing a long prompt loses). The tokens of
    ``token_ids`` found in the cut-off head replace the first tokens of ``kept``, in their order:
    the length stays within the budget and the last kept token (next to the answer) always stays.
    """
    lost = [t for t in full[: len(full) - len(kept)] if t in token_ids][: max(len(kept) - 1, 0)]
    return [*lost, *kept[len(lost) :]], len(lost)


def tag_tokens(tags: Iterable[PromptTag]) -> list[str]:
    """Every token the tags may write, once each, in order."""
    return list(dict.fromkeys(t for tag in tags for t in tag.tokens))


@torch.no_grad()
def grow_embeddings(model, vocab_size: int) -> None:
    """Resize input/output embeddings to ``vocab_size``; new rows get the mean of the old ones.

    The mean (not transformers' sampled init) is deterministic, so a base model re-built at load
    time (:func:`pipelines.finetune.training_run.load_run` under a LoRA adapter) gets the same rows.
    """
    old = model.get_input_embeddings().weight.shape[0]
    if old >= vocab_size:
        return
    model.resize_token_embeddings(vocab_size, mean_resizing=False)
    for layer in {
        id(m): m for m in (model.get_input_embeddings(), model.get_output_embeddings()) if m is not None
    }.values():
        layer.weight[old:] = layer.weight[:old].mean(dim=0, keepdim=True)
