"""The one rule for rows longer than ``max_length`` tokens, shared by the scorer, the trainer and
the evaluation, so a row is scored, trained on and evaluated with the same tokens.

A row is a prompt and a completion (the answer). When ``len(prompt) + len(completion) >
max_length``:

1. the prompt is promised ``room = min(len(prompt), max(1, max_length // 4))`` tokens: at least
   one, because the first completion token is predicted from the token before it; a quarter, so
   a long answer still sees the end of its question;
2. the completion keeps its head: whole when it fits in ``max_length - room``, else cut to that
   (the answer is what every score and loss is about, so it comes first);
3. the prompt keeps its tail in the room left: the tokens next to the answer (the end of the
   user turn, where ``[IND]`` sits, and the assistant header) matter most to it.

No row is ever dropped: the completion keeps ``max_length - room >= 1`` tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def budget(n_prompt: int, n_completion: int, max_length: int) -> tuple[int, int]:
    """(prompt tokens kept, completion tokens kept) under the rule above."""
    if max_length < 2:
        raise ValueError(
            f"max_length must be at least 2 (a prompt token and an answer token), got {max_length}"
        )
    if n_prompt + n_completion <= max_length:
        return n_prompt, n_completion
    room = min(n_prompt, max(1, max_length // 4))
    kept_completion = min(n_completion, max_length - room)
    return max_length - kept_completion, kept_completion


def truncate_ids(
    prompt_ids: Sequence[T], completion_ids: Sequence[T], max_length: int
) -> tuple[list[T], list[T], bool]:
    """``(prompt tail, completion head, cut)`` with ``len(prompt) + len(completion) <= max_length``.

    ``cut`` is True when either part lost tokens. Works on any per-token sequence, so a mask
    aligned with the prompt is cut the same way by slicing its tail to the returned length.
    """
    n_prompt, n_completion = budget(len(prompt_ids), len(completion_ids), max_length)
    cut = (n_prompt, n_completion) != (len(prompt_ids), len(completion_ids))
    # Slice from an explicit start: prompt_ids[-0:] would keep the whole prompt, not none of it.
    return list(prompt_ids[len(prompt_ids) - n_prompt :]), list(completion_ids[:n_completion]), cut
