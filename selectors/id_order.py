"""Rows in id order without holding the ids: each id's first 16 bytes as two 64-bit keys, and the
full ids read again only where those keys collide (stream_select breaks every tie by id)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc


def id_keys(ids: pl.Series) -> np.ndarray:
    """(n, 2) uint64: the first 16 UTF-8 bytes of each id, big-endian, zero-padded, so comparing
    keys compares ids (str order is code point order is UTF-8 byte order) unless the keys are equal."""
    if ids.null_count():
        raise ValueError("select: some rows have no id")
    a = pc.cast(ids.to_arrow(), pa.large_binary())
    a = a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a
    n = len(a)
    off = np.frombuffer(a.buffers()[1], dtype=np.int64)[a.offset : a.offset + n + 1]
    data = np.frombuffer(a.buffers()[2], dtype=np.uint8) if a.buffers()[2] is not None else np.zeros(1, np.uint8)
    if data.size == 0:
        data = np.zeros(1, np.uint8)
    lens = np.diff(off)
    j = np.arange(16)
    inside = j < lens[:, None]
    b = np.where(inside, data[np.where(inside, off[:-1, None] + j, 0)], 0).astype(np.uint64)
    shifts = np.uint64(8) * (np.uint64(7) - np.arange(8, dtype=np.uint64))
    return np.stack([(b[:, :8] << shifts).sum(axis=1, dtype=np.uint64),
                     (b[:, 8:] << shifts).sum(axis=1, dtype=np.uint64)], axis=1)


def _dense_rank(keys: Sequence[np.ndarray]) -> np.ndarray:
    """Dense rank (0-based) of rows by ``keys`` (most significant first)."""
    order = np.lexsort(tuple(reversed(keys)))
    new = np.zeros(order.size, dtype=bool)
    new[1:] = np.logical_or.reduce([k[order][1:] != k[order][:-1] for k in keys])
    rank = np.empty(order.size, dtype=np.int64)
    rank[order] = np.cumsum(new)
    return rank


def id_rank(keys: np.ndarray, read_ids: Callable[[np.ndarray], list[str]]) -> np.ndarray:
    """Dense rank of each row's id in string order from its :func:`id_keys`; rows whose keys
    collide get their full ids from ``read_ids(rows)``."""
    rank = _dense_rank([keys[:, 0], keys[:, 1]])
    counts = np.bincount(rank)
    clash = np.flatnonzero(counts[rank] > 1)
    if clash.size == 0:
        return rank
    sub = np.zeros(rank.size, dtype=np.int64)
    ids = read_ids(clash)
    sub[clash] = pl.Series(ids, dtype=pl.Utf8).rank("dense").cast(pl.Int64).to_numpy()
    return _dense_rank([rank, sub])
