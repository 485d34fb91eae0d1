"""PubMedQA metrics from one forward pass per row: ranked-choice accuracy and long-answer NLL.

The prompt is the row's question + context (the chat template, as training renders it); the
response is "<Decision>. <long answer>".
* ranked choice: the decision whose token gets the lowest loss at the response's first position
  (Yes / No / Maybe are one token each in SmolLM2's vocabulary: checked, else an error);
* long-answer NLL: the mean NLL of the long answer's tokens, after the gold decision.
A prompt over ``max_tokens`` loses its head (pipelines.truncation, as everywhere else).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch

from pipelines.schema import user_content
from pipelines.truncation import truncate_ids

CHOICES = ("Yes", "No", "Maybe")


def choice_ids(tok) -> list[int]:
    ids = [tok(c, add_special_tokens=False)["input_ids"] for c in CHOICES]
    if any(len(i) != 1 for i in ids):
        raise ValueError(f"ranked choice needs one token per decision: {dict(zip(CHOICES, ids, strict=True))}")
    return [i[0] for i in ids]


def encode(tok, row: dict, max_tokens: int) -> tuple[list[int], int, int]:
    """(ids, position of the response's first token, position of the long answer's first token)."""
    messages = [{"role": "user", "content": user_content(row["instruction"], row["context"])}]
    prompt = tok(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True),
                 add_special_tokens=False)["input_ids"]
    response = row["response"]
    enc = tok(response, add_special_tokens=False, return_offsets_mapping=True)
    decision_end = response.index(".") + 1
    answer_at = next(i for i, (start, _end) in enumerate(enc["offset_mapping"]) if start >= decision_end)
    prompt, completion, _ = truncate_ids(prompt, enc["input_ids"], max_tokens)
    return prompt + completion, len(prompt), len(prompt) + answer_at


@torch.no_grad()
def pubmedqa_metrics(model, tok, rows: list[dict], labels: list[str], max_tokens: int = 512,
                     token_budget: int = 4096) -> dict[str, float]:
    """accuracy (ranked choice), majority_rate (the most frequent gold label's share) and long_nll."""
    choices = choice_ids(tok)
    encoded = [encode(tok, r, max_tokens) for r in rows]
    order = sorted(range(len(rows)), key=lambda i: len(encoded[i][0]))
    picks, nll = [None] * len(rows), [0.0] * len(rows)
    model.eval()
    start = 0
    while start < len(order):
        end = start + 1
        while end < len(order) and len(encoded[order[end]][0]) * (end - start + 1) <= token_budget:
            end += 1
        batch = order[start:end]
        width = max(len(encoded[i][0]) for i in batch)
        pad = tok.pad_token_id
        ids = torch.tensor([encoded[i][0] + [pad] * (width - len(encoded[i][0])) for i in batch])
        mask = torch.tensor([[1] * len(encoded[i][0]) + [0] * (width - len(encoded[i][0])) for i in batch])
        hidden = model.get_decoder()(input_ids=ids, attention_mask=mask).last_hidden_state
        for b, i in enumerate(batch):  # the vocabulary projection only where a response token is predicted
            seq, at, answer_at = encoded[i]
            logp = torch.log_softmax(model.get_output_embeddings()(hidden[b, at - 1: len(seq) - 1]).float(), dim=-1)
            picks[i] = CHOICES[int(torch.argmax(logp[0, choices]))].lower()
            targets = torch.tensor(seq[answer_at:])
            nll[i] = float(-logp[answer_at - at:].gather(1, targets[:, None]).mean())
        start = end
    counts = Counter(labels)
    return {"accuracy": float(np.mean([p == g for p, g in zip(picks, labels, strict=True)])),
            "majority_rate": counts.most_common(1)[0][1] / len(labels), "long_nll": float(np.mean(nll)),
            **{f"picked_{c.lower()}": picks.count(c.lower()) / len(picks) for c in CHOICES}}
