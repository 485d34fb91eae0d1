"""Work on one item while a thread makes the next.

    for shard in ahead(pl.read_parquet(p) for p in paths): ...

polars, pyarrow and numpy release the GIL in their own code, so reading (and marking) the next
shard or record batch runs on the second core while this thread hashes or writes the current
one. At most two items are alive at once; an error in the thread is raised where its item would
have come.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
_END = object()


def ahead(items: Iterable[T]) -> Iterator[T]:
    """``items`` in order, each one made in a thread while the caller works on the one before."""
    it = iter(items)
    with ThreadPoolExecutor(1, thread_name_prefix="read-ahead") as pool:
        pending = pool.submit(next, it, _END)
        while (item := pending.result()) is not _END:
            pending = pool.submit(next, it, _END)
            yield item
