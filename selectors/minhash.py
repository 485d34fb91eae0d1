"""MinHash signatures of word n-gram shingles and their LSH bands, vectorised in numpy/polars
(instruct_selectors.dedup decides near duplicates from them).

A one-permutation MinHash (Li, Owen & Zhang 2012) of ``num_perm`` bins with rotation
densification (Shrivastava & Li 2014): the fraction of equal entries estimates the Jaccard
similarity of two rows' shingle sets, as datasketch's MinHash does, at a million rows in seconds
per shard instead of datasketch's per-row Python.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

_WORD_SEED = 0x5EED3
_EMPTY = np.uint32(0xFFFFFFFF)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
CHUNK = 5_000  # rows per signature batch (bounds the temporary shingle arrays)


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser (uint64 -> uint64, wrapping)."""
    with np.errstate(over="ignore"):
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return h ^ (h >> np.uint64(31))


def shingle_hashes(texts: Sequence[str], ngram: int = 3, salt: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(row index, 64-bit hash) of every word n-gram of every text; a text of fewer than ``ngram``
    words is one shingle (the whole text). ``salt`` (uint64 per row) mixes into each row's hashes:
    rows of different salts share no shingle, so they are never near duplicates."""
    s = pl.Series("t", texts, dtype=pl.Utf8)
    words = s.str.split(" ")
    lens = words.list.len().to_numpy().astype(np.int64)
    wh = words.explode().hash(seed=_WORD_SEED).to_numpy()
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
    row = np.repeat(np.arange(len(texts), dtype=np.int64), lens)
    pos = np.arange(wh.size, dtype=np.int64) - np.repeat(starts, lens)
    valid = pos <= (np.repeat(lens, lens) - ngram)
    h = wh.copy()
    with np.errstate(over="ignore"):
        for k in range(1, ngram):
            nxt = np.empty_like(wh)
            nxt[:-k] = wh[k:]
            nxt[-k:] = 0
            h = _mix(h * _GOLDEN + nxt)
    short = lens < ngram
    out_rows = [row[valid]]
    out_h = [h[valid]]
    if short.any():  # whole text as its one shingle
        out_rows.append(np.flatnonzero(short))
        out_h.append(_mix(s.filter(pl.Series(short)).hash(seed=_WORD_SEED + 1).to_numpy()))
    rows, hashes = np.concatenate(out_rows), np.concatenate(out_h)
    return rows, hashes if salt is None else _mix(hashes ^ salt[rows])


def signatures(texts: Sequence[str], num_perm: int = 128, ngram: int = 3, salt: np.ndarray | None = None) -> np.ndarray:
    """(n, num_perm) uint32 densified one-permutation MinHash signatures."""
    out = np.empty((len(texts), num_perm), dtype=np.uint32)
    for lo in range(0, len(texts), CHUNK):
        part = None if salt is None else salt[lo : lo + CHUNK]
        out[lo : lo + CHUNK] = _signatures(texts[lo : lo + CHUNK], num_perm, ngram, part)
    return out


def _signatures(texts: Sequence[str], k: int, ngram: int, salt: np.ndarray | None = None) -> np.ndarray:
    n = len(texts)
    if n == 0:
        return np.empty((0, k), dtype=np.uint32)
    rows, h = shingle_hashes(texts, ngram, salt)
    key = rows * k + (h % np.uint64(k)).astype(np.int64)
    val = (h >> np.uint64(32)).astype(np.uint32)
    sig = np.full(n * k, _EMPTY, dtype=np.uint32)
    np.minimum.at(sig, key, val)  # numpy >= 1.25's ufunc.at: ~50x a polars group_by min here
    sig = sig.reshape(n, k)
    empty = sig == _EMPTY
    if empty.any():  # rotation densification: an empty bin takes the next non-empty bin (circularly) + offset
        idx2 = np.where(np.concatenate([~empty, ~empty], axis=1), np.arange(2 * k), 2 * k)
        nxt = np.minimum.accumulate(idx2[:, ::-1], axis=1)[:, ::-1][:, :k]
        dist = (nxt - np.arange(k)).astype(np.uint32)
        src = np.take_along_axis(sig, nxt % k, axis=1)
        with np.errstate(over="ignore"):
            filled = src + dist * np.uint32(0x9E3779B1)
        sig = np.where(empty, filled, sig)
    return sig


def lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows per band) as datasketch's MinHashLSH picks them (equal FP/FN weights)."""
    from datasketch.lsh import _optimal_param

    return _optimal_param(threshold, num_perm, 0.5, 0.5)


def band_hashes(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(n, bands) uint64: one hash per band of ``rows`` signature entries."""
    out = np.empty((sig.shape[0], bands), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for b in range(bands):
            h = np.full(sig.shape[0], np.uint64(b + 1), dtype=np.uint64)
            for j in range(b * rows, (b + 1) * rows):
                h = _mix(h * _GOLDEN + sig[:, j].astype(np.uint64))
            out[:, b] = h
    return out
