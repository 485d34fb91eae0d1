"""One progress bar per stage: items done / total, plus liveness between items.

A shard of generation can take minutes on a CPU, so a bar that moves only when a shard is
written looks hung. :class:`StageBar` counts finished items (``bar(n)``) and, while it is the
active bar (``with bar.active():``), every generation batch any LLM call finishes
(:func:`on_batch`) and the tokens it produced (:func:`on_tokens`), shown as ``generated`` and
``tok/s`` beside the bar.

    bar = StageBar("glan subjects", total=len(items))
    with bar.active():
        run_level(..., progress=bar)
    bar.close()
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_ACTIVE: ContextVar[StageBar | None] = ContextVar("active_stage_bar", default=None)


class StageBar:
    def __init__(self, desc: str, total: int, enabled: bool = True, unit: str = "item"):
        self.generated = self.tokens = 0
        self.started = time.perf_counter()
        self.bar = None
        if enabled and total:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True)

    def __call__(self, n: int) -> None:
        """``n`` more items finished."""
        if self.bar is not None:
            self.bar.update(n)

    def batch(self, n: int) -> None:
        """A generation batch of ``n`` outputs finished."""
        self.generated += n
        self._postfix()

    def add_tokens(self, n: int) -> None:
        self.tokens += n
        self._postfix()

    def _postfix(self) -> None:
        if self.bar is not None:
            rate = self.tokens / max(time.perf_counter() - self.started, 1e-9)
            self.bar.set_postfix(generated=self.generated, tok_s=f"{rate:.1f}", refresh=True)

    @contextmanager
    def active(self) -> Iterator[StageBar]:
        token = _ACTIVE.set(self)
        try:
            yield self
        finally:
            _ACTIVE.reset(token)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def on_batch(n: int) -> None:
    """Tell the active bar (if any) that a generation batch of ``n`` outputs finished."""
    bar = _ACTIVE.get()
    if bar is not None:
        bar.batch(n)


def on_tokens(n: int) -> None:
    bar = _ACTIVE.get()
    if bar is not None:
        bar.add_tokens(n)
