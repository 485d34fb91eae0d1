"""Dedup: exact duplicates (hash of normalised text) and near duplicates (vectorised MinHash + LSH bands).

    from instruct_selectors.dedup import find_duplicates
    kind, dup_of = find_duplicates(table, near_threshold=0.8)

The first row (in table order) of each group is kept; every later member is marked
``"exact"`` or ``"near"`` with the id of the kept row it duplicates. Text = instruction, context
and response joined, normalised (NFKC, case-folded, whitespace collapsed) before hashing or
shingling. Exact keys are two seeded 64-bit hashes of that text (128 bits).

Near duplicates use word n-gram shingles (texts shorter than n words are one shingle: the whole
text), hashed to 64 bits and summarised by a one-permutation MinHash (Li, Owen & Zhang 2012) of
``num_perm`` bins with rotation densification (Shrivastava & Li 2014), all in numpy/polars so a
million rows take seconds per shard instead of datasketch's per-row Python. The fraction of equal
signature entries estimates the Jaccard similarity of the shingle sets, as datasketch's MinHash
does. LSH bands (b bands of r rows, chosen as datasketch's MinHashLSH does for the threshold)
give candidates; a candidate counts only when its estimated Jaccard is >= ``near_threshold``, so
the threshold means what it says; and a row is compared only with earlier rows that were kept,
so chains (a~b, b~c, a!~c) do not drop c through b.

The per-row state (:class:`DedupState`: exact key, signature, band hashes) is all the decision
needs, so a selection over shards (:mod:`instruct_selectors.stream_select`) builds it shard by
shard and keeps only that (signatures may live in a memory-mapped file).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from pipelines.schema import normalise_text

TEXT_FIELDS = ("instruction", "context", "response")
_EXACT_SEEDS = (0x5EED1, 0x5EED2)
_WORD_SEED = 0x5EED3
_EMPTY = np.uint32(0xFFFFFFFF)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_CHUNK = 5_000  # rows per signature batch (bounds the temporary shingle arrays)


def row_texts(table: pl.DataFrame, fields: Sequence[str] = TEXT_FIELDS) -> list[str]:
    """Normalised text of each row (fields joined with a separator no text contains)."""
    cols = [table[f].fill_null("").to_list() for f in fields]
    return [normalise_text("\x1f".join(parts)) for parts in zip(*cols, strict=True)]


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser (uint64 -> uint64, wrapping)."""
    with np.errstate(over="ignore"):
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return h ^ (h >> np.uint64(31))


def exact_keys(texts: Sequence[str]) -> np.ndarray:
    """(n, 2) uint64: two seeded hashes of each normalised text."""
    s = pl.Series(texts, dtype=pl.Utf8)
    return np.stack([s.hash(seed=seed).to_numpy() for seed in _EXACT_SEEDS], axis=1)


def shingle_hashes(texts: Sequence[str], ngram: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(row index, 64-bit hash) of every word n-gram of every text; a text of fewer than ``ngram``
    words is one shingle (the whole text)."""
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
    return np.concatenate(out_rows), np.concatenate(out_h)


def signatures(texts: Sequence[str], num_perm: int = 128, ngram: int = 3) -> np.ndarray:
    """(n, num_perm) uint32 densified one-permutation MinHash signatures."""
    out = np.empty((len(texts), num_perm), dtype=np.uint32)
    for lo in range(0, len(texts), _CHUNK):
        out[lo : lo + _CHUNK] = _signatures(texts[lo : lo + _CHUNK], num_perm, ngram)
    return out


def _signatures(texts: Sequence[str], k: int, ngram: int) -> np.ndarray:
    n = len(texts)
    if n == 0:
        return np.empty((0, k), dtype=np.uint32)
    rows, h = shingle_hashes(texts, ngram)
    key = rows * k + (h % np.uint64(k)).astype(np.int64)
    val = (h >> np.uint64(32)).astype(np.uint32)
    mins = pl.DataFrame({"key": key, "v": val}).group_by("key").agg(pl.col("v").min())
    sig = np.full(n * k, _EMPTY, dtype=np.uint32)
    sig[mins["key"].to_numpy()] = mins["v"].to_numpy()
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


@dataclass
class DedupState:
    """What dedup decides from, one row per table row: exact keys (n, 2), signatures (n, num_perm;
    may be a memmap, read only for candidate rows) and LSH band hashes (n, bands)."""

    exact: np.ndarray
    sig: np.ndarray
    bands: np.ndarray


def dedup_state(texts: Sequence[str], *, near_threshold: float = 0.8, num_perm: int = 128, ngram: int = 3) -> DedupState:
    sig = signatures(texts, num_perm, ngram)
    return DedupState(exact_keys(texts), sig, band_hashes(sig, *lsh_params(near_threshold, num_perm)))


class StateWriter:
    """Builds a :class:`DedupState` shard by shard: exact keys and bands in memory, signatures
    appended to ``sig_path`` (read back memory-mapped)."""

    def __init__(self, sig_path: Path, *, near_threshold: float, num_perm: int, ngram: int):
        self.sig_path, self.num_perm, self.ngram = Path(sig_path), num_perm, ngram
        self.params = lsh_params(near_threshold, num_perm)
        self._exact: list[np.ndarray] = []
        self._bands: list[np.ndarray] = []
        self._file = open(self.sig_path, "wb")  # noqa: SIM115 - closed in finish()
        self.rows = 0

    def add(self, texts: Sequence[str]) -> None:
        for lo in range(0, len(texts), _CHUNK):
            part = texts[lo : lo + _CHUNK]
            sig = _signatures(part, self.num_perm, self.ngram)
            self._file.write(np.ascontiguousarray(sig).tobytes())
            self._exact.append(exact_keys(part))
            self._bands.append(band_hashes(sig, *self.params))
            self.rows += len(part)

    def finish(self) -> DedupState:
        self._file.close()
        b = self.params[0]
        sig = (np.memmap(self.sig_path, dtype=np.uint32, mode="r", shape=(self.rows, self.num_perm))
               if self.rows else np.empty((0, self.num_perm), dtype=np.uint32))
        exact = np.concatenate(self._exact) if self._exact else np.empty((0, 2), dtype=np.uint64)
        bands = np.concatenate(self._bands) if self._bands else np.empty((0, b), dtype=np.uint64)
        return DedupState(exact, sig, bands)


def decide(
    state: DedupState,
    ids: Sequence[str],
    rows: Sequence[int] | np.ndarray,
    *,
    exact: bool = True,
    near: bool = True,
    near_threshold: float = 0.8,
) -> tuple[list[str | None], list[str | None]]:
    """Per entry of ``rows`` (row indices into the state, in table order): (kind, id of the kept row
    it duplicates). Only the rows given take part."""
    if not 0.0 < near_threshold <= 1.0:
        raise ValueError(f"near_threshold must be in (0, 1], got {near_threshold}")
    rows = np.asarray(rows, dtype=np.int64)
    m = rows.size
    kind: list[str | None] = [None] * m
    of: list[str | None] = [None] * m
    alive = np.ones(m, dtype=bool)
    if m == 0:
        return kind, of
    if exact:
        ek = state.exact[rows]
        df = pl.DataFrame({"p": np.arange(m), "a": ek[:, 0], "b": ek[:, 1]})
        first = df.with_columns(pl.col("p").min().over("a", "b").alias("f")).filter(pl.col("p") != pl.col("f"))
        for p, f in zip(first["p"].to_list(), first["f"].to_list(), strict=True):
            kind[p], of[p] = "exact", ids[rows[f]]
            alive[p] = False
    if near:
        pos = np.flatnonzero(alive)
        bands = state.bands[rows[pos]]
        nb = bands.shape[1]
        found = []
        for b in range(nb):  # one band at a time: memory stays O(rows), not O(rows x bands)
            multi = pl.DataFrame({"p": pos, "h": bands[:, b]}).filter(pl.len().over("h") > 1)
            if multi.height:
                found.append(multi.join(multi, on="h", suffix="_e").filter(pl.col("p_e") < pl.col("p"))
                             .select("p", "p_e"))
        if found:
            pairs = (pl.concat(found).unique().sort("p", "p_e")
                     .group_by("p", maintain_order=True).agg(pl.col("p_e")))
            kept = alive.copy()
            for p, cands in zip(pairs["p"].to_list(), pairs["p_e"].to_list(), strict=True):
                cands = [c for c in cands if kept[c]]
                if not cands:
                    continue
                mine = np.asarray(state.sig[rows[p]])
                theirs = np.asarray(state.sig[rows[cands]])
                est = (theirs == mine).mean(axis=1)
                matches = [c for c, e in zip(cands, est, strict=True) if e >= near_threshold]
                if matches:
                    kind[p], of[p] = "near", ids[rows[min(matches)]]
                    kept[p] = False
    return kind, of


def find_duplicates(
    table: pl.DataFrame,
    *,
    exact: bool = True,
    near: bool = True,
    near_threshold: float = 0.8,
    num_perm: int = 128,
    ngram: int = 3,
    fields: Sequence[str] = TEXT_FIELDS,
) -> tuple[list[str | None], list[str | None]]:
    """Per row: (``"exact"`` / ``"near"`` / None, id of the kept row it duplicates or None)."""
    if not 0.0 < near_threshold <= 1.0:
        raise ValueError(f"near_threshold must be in (0, 1], got {near_threshold}")
    state = dedup_state(row_texts(table, fields), near_threshold=near_threshold, num_perm=num_perm, ngram=ngram)
    return decide(state, table["id"].to_list(), np.arange(table.height), exact=exact, near=near,
                  near_threshold=near_threshold)
