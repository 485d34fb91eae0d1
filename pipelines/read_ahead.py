"""Work on one item while threads make the next ones.

    for shard in ahead(pl.read_parquet(p) for p in paths): ...
    for state in ahead_map(hash_rows, shards): ...       # one item per core at once, in order

polars, pyarrow and numpy release the GIL in their own code, so reading (and marking) the next
shard or record batch runs on the second core while this thread hashes or writes the current
one. At most two items are alive at once; an error in the thread is raised where its item would
have come.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from pipelines.cores import available_cores

T = TypeVar("T")
R = TypeVar("R")
_END = object()


def ahead(items: Iterable[T]) -> Iterator[T]:
    """``items`` in order, each one made in a thread while the caller works on the one before."""
    it = iter(items)
    with ThreadPoolExecutor(1, thread_name_prefix="read-ahead") as pool:
        pending = pool.submit(next, it, _END)
        while (item := pending.result()) is not _END:
            pending = pool.submit(next, it, _END)
            yield item


def ahead_map(fn: Callable[[T], R], items: Iterable[T], workers: int | None = None) -> Iterator[R]:
    """``fn(item)`` for each of ``items``, in order, ``workers`` (default: the cores, at most 4)
    computed at once in threads while the caller works on earlier results. Items are drawn in the
    caller's thread, so ``items`` may itself be an :func:`ahead` stream. For work that releases
    the GIL (polars, numpy): hashing 4 shards for dedup took 1.75 s in 2 threads, 3.05 s in one."""
    workers = workers or min(4, available_cores())
    it = iter(items)
    with ThreadPoolExecutor(workers, thread_name_prefix="ahead-map") as pool:
        pending = deque(pool.submit(fn, item) for _, item in zip(range(workers), it, strict=False))
        while pending:
            result = pending.popleft().result()
            if (item := next(it, _END)) is not _END:
                pending.append(pool.submit(fn, item))
            yield result
