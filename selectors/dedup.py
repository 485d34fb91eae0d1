"""Dedup: exact duplicates (hash of normalised text) and near duplicates (vectorised MinHash + LSH bands).

    from instruct_selectors.dedup import find_duplicates
    kind, dup_of = find_duplicates(table, near_threshold=0.8)

The first row (in table order) of each group is kept; every later member is marked
``"exact"`` or ``"near"`` with the id of the kept row it duplicates. Text = instruction, context
and response joined, normalised (NFKC, case-folded, whitespace collapsed) before hashing or
shingling. Exact keys are two seeded 64-bit hashes of that text (128 bits).

Near duplicates use word n-gram shingles (texts shorter than n words are one shingle: the whole
text) summarised by MinHash signatures (instruct_selectors.minhash). LSH bands (b bands of r
rows, chosen as datasketch's MinHashLSH does for the threshold) give candidates; a candidate
counts only when its estimated Jaccard is >= ``near_threshold``, so the threshold means what it
says; and a row is compared only with earlier rows that were kept, so chains (a~b, b~c, a!~c) do
not drop c through b. With ``same_context`` (the select step's default) only rows with the same
context can be near duplicates: questions about one passage are told apart by what they ask.

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
from instruct_selectors.minhash import CHUNK, band_hashes, lsh_params, signatures

from pipelines.schema import normalise_text

TEXT_FIELDS = ("instruction", "context", "response")
_EXACT_SEEDS = (0x5EED1, 0x5EED2)


# What str.split() splits ASCII text on (it counts \x1c-\x1f as whitespace; regex \s does not),
# and what makes " ".join(s.split()) differ from an ASCII s.
_ASCII_SPACE = "[ \t\n\r\x0b\x0c\x1c-\x1f]+"
_OTHER_SPACE = "[\t\n\r\x0b\x0c\x1c-\x1f]"


def _tidy_ascii(text: pl.Series) -> pl.Series:
    """``" ".join(t.lower().split())`` of ASCII strings; the regex replace (as slow as Python
    per string) runs only on the strings whose spacing it changes."""
    out = text.fill_null("").str.to_lowercase()
    # four simple scans: one regex with anchors and alternation is ~10x slower
    untidy = (out.str.contains(_OTHER_SPACE) | out.str.contains("  ", literal=True)
              | out.str.starts_with(" ") | out.str.ends_with(" "))
    if untidy.any():
        idx = untidy.arg_true()
        out = out.scatter(idx, out.gather(idx).str.replace_all(_ASCII_SPACE, " ").str.strip_chars(" "))
    return out


def row_texts(table: pl.DataFrame, fields: Sequence[str] = TEXT_FIELDS) -> pl.Series:
    """Normalised text of each row (fields joined with a separator no text contains), equal to
    ``normalise_text`` of each. ASCII rows, where NFKC changes nothing and casefold is lower
    case, are normalised by polars, field by field (the separator is whitespace to
    ``str.split``, so the words of the joined text are the fields' words in turn); the other
    rows by ``normalise_text`` (a million rows: about 10 s of Python saved)."""
    if table.height == 0:
        return pl.Series("text", [], dtype=pl.Utf8)
    tidy = pl.DataFrame([_tidy_ascii(table[f]).alias(f"f{i}") for i, f in enumerate(fields)])
    words = [pl.when(pl.col(c) != "").then(pl.col(c)) for c in tidy.columns]
    out = tidy.select(pl.concat_str(words, separator=" ", ignore_nulls=True).fill_null("").alias("text"))["text"]
    other = table.select(pl.any_horizontal(pl.col(f).str.len_bytes() != pl.col(f).str.len_chars()
                                           for f in fields).fill_null(False)).to_series()  # a non-ASCII character
    if other.any():  # only these rows are joined, for normalise_text
        idx = other.arg_true()
        joined = table[idx].select(pl.concat_str([pl.col(f).fill_null("") for f in fields], separator="\x1f"))
        out = out.scatter(idx, [normalise_text(t) for t in joined.to_series().to_list()])
    return out


def exact_keys(texts: Sequence[str]) -> np.ndarray:
    """(n, 2) uint64: two seeded hashes of each normalised text."""
    s = pl.Series(texts, dtype=pl.Utf8)
    return np.stack([s.hash(seed=seed).to_numpy() for seed in _EXACT_SEEDS], axis=1)


def near_inputs(table: pl.DataFrame, fields: Sequence[str], same_context: bool) -> tuple[pl.Series, np.ndarray] | None:
    """(texts to shingle, salt) for near duplicates, or None when they are the exact texts (no
    ``same_context``, or no context field). ``same_context``: the fields but ``context``, salted by
    the context's hash, so only rows about the same passage can be near duplicates (tasks about one
    passage differ by their question and answer, which the passage would drown)."""
    if not same_context or "context" not in fields:
        return None
    salt = exact_keys(row_texts(table, ["context"]))[:, 0]
    return row_texts(table, [f for f in fields if f != "context"]), np.where(table["context"].fill_null("").to_numpy() == "",
                                                                          np.uint64(0), salt)


@dataclass
class DedupState:
    """What dedup decides from, one row per table row: exact keys (n, 2), signatures (n, num_perm)
    and LSH band hashes (n, bands). Built in memory by :func:`dedup_state`; :class:`StateWriter`
    spills all three to files (``exact``/``bands`` then hold paths, ``sig`` a path too), so a
    decision loads one band at a time and reads signatures only for candidate pairs."""

    exact: np.ndarray | Path
    sig: np.ndarray | Path
    bands: np.ndarray | Sequence[Path]
    num_perm: int = 0

    def __post_init__(self):
        if isinstance(self.sig, np.ndarray):
            self.num_perm = self.sig.shape[1]

    @property
    def n_bands(self) -> int:
        return self.bands.shape[1] if isinstance(self.bands, np.ndarray) else len(self.bands)

    def exact_keys(self) -> np.ndarray:
        if isinstance(self.exact, np.ndarray):
            return self.exact
        return np.fromfile(self.exact, dtype=np.uint64).reshape(-1, 2)

    def band(self, b: int) -> np.ndarray:
        """(n,) uint64: band ``b``'s hash of every row."""
        if isinstance(self.bands, np.ndarray):
            return self.bands[:, b]
        return np.fromfile(self.bands[b], dtype=np.uint64)

    def sig_rows(self, idx: np.ndarray) -> np.ndarray:
        """(len(idx), num_perm) signatures of rows ``idx``. From a file: a fresh mapping per call,
        dropped on return, so the pages read do not stay in this process's resident set."""
        if isinstance(self.sig, np.ndarray):
            return self.sig[idx]
        if idx.size == 0:
            return np.empty((0, self.num_perm), dtype=np.uint32)
        mm = np.memmap(self.sig, dtype=np.uint32, mode="r")
        try:
            return mm.reshape(-1, self.num_perm)[idx]
        finally:
            del mm


def dedup_state(texts: Sequence[str], *, near_threshold: float = 0.8, num_perm: int = 128, ngram: int = 3,
                near: tuple[Sequence[str], np.ndarray | None] | None = None) -> DedupState:
    """``near``: (texts, salt) for the signatures (:func:`near_inputs`); default ``texts``."""
    near_texts, salt = near or (texts, None)
    sig = signatures(near_texts, num_perm, ngram, salt)
    return DedupState(exact_keys(texts), sig, band_hashes(sig, *lsh_params(near_threshold, num_perm)))


class StateWriter:
    """Builds a :class:`DedupState` shard by shard with flat memory: exact keys, signatures and
    each band's hashes are appended to their own files under ``folder`` (named ``prefix-*``)."""

    def __init__(self, folder: Path, prefix: str, *, near_threshold: float, num_perm: int, ngram: int):
        self.num_perm, self.ngram = num_perm, ngram
        self.params = lsh_params(near_threshold, num_perm)
        folder = Path(folder)
        self.exact_path = folder / f"{prefix}-exact.bin"
        self.sig_path = folder / f"{prefix}-sig.bin"
        self.band_paths = [folder / f"{prefix}-band{b:03d}.bin" for b in range(self.params[0])]
        self._files = [open(p, "wb") for p in (self.exact_path, self.sig_path, *self.band_paths)]  # noqa: SIM115 - closed in finish()
        self.rows = 0

    def state_of(self, texts: Sequence[str], near: tuple[Sequence[str], np.ndarray | None] | None = None
                 ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(exact keys, signatures, band hashes) of ``texts`` (signatures of ``near``'s texts and
        salt when given: :func:`near_inputs`), by chunks; pure, so shards are hashed in threads."""
        near_texts, salt = near or (texts, None)
        out = []
        for lo in range(0, len(texts), CHUNK):
            sig = signatures(near_texts[lo : lo + CHUNK], self.num_perm, self.ngram,
                             None if salt is None else salt[lo : lo + CHUNK])
            out.append((exact_keys(texts[lo : lo + CHUNK]), sig, band_hashes(sig, *self.params)))
        return out

    def append(self, state: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
        exact_f, sig_f, *band_f = self._files
        for exact, sig, bands in state:
            exact_f.write(np.ascontiguousarray(exact).tobytes())
            sig_f.write(np.ascontiguousarray(sig).tobytes())
            for b, f in enumerate(band_f):
                f.write(np.ascontiguousarray(bands[:, b]).tobytes())
            self.rows += len(sig)

    def finish(self) -> DedupState:
        for f in self._files:
            f.close()
        return DedupState(self.exact_path, self.sig_path, self.band_paths, num_perm=self.num_perm)


_VERIFY_CHUNK = 8192  # candidate pairs whose signatures are read at once (bounds the pages touched)


def _first_of_group(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per position: the smallest position with the same (a, b)."""
    order = np.lexsort((b, a))  # stable: within a group, positions ascending
    sa, sb = a[order], b[order]
    start = np.ones(a.size, dtype=bool)
    start[1:] = (sa[1:] != sa[:-1]) | (sb[1:] != sb[:-1])
    group_first = order[np.flatnonzero(start)]
    first = np.empty(a.size, dtype=np.int64)
    first[order] = np.repeat(group_first, np.diff(np.append(np.flatnonzero(start), a.size)))
    return first


def _band_pairs(pos: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Pairs (later, earlier) of positions sharing a band hash, as ``later << 32 | earlier`` keys."""
    order = np.argsort(h, kind="stable")  # pos ascending, so ties stay ascending
    sh, sp = h[order], pos[order]
    if sh.size < 2:
        return np.empty(0, dtype=np.uint64)
    start = np.ones(sh.size, dtype=bool)
    start[1:] = sh[1:] != sh[:-1]
    gid = np.cumsum(start) - 1
    size = np.bincount(gid)
    multi = size[gid] > 1
    sp, gid = sp[multi], gid[multi]
    out = []
    d = 1
    while d < sp.size:
        same = gid[d:] == gid[:-d]
        if not same.any():
            break
        later, earlier = sp[d:][same], sp[:-d][same]
        out.append((later.astype(np.uint64) << np.uint64(32)) | earlier.astype(np.uint64))
        d += 1
    return np.concatenate(out) if out else np.empty(0, dtype=np.uint64)


def decide_arrays(
    state: DedupState,
    rows: Sequence[int] | np.ndarray,
    *,
    exact: bool = True,
    near: bool = True,
    near_threshold: float = 0.8,
) -> tuple[np.ndarray, np.ndarray]:
    """Per entry of ``rows`` (row indices into the state, in table order): kind (int8: 0 kept,
    1 exact, 2 near duplicate) and the row index (into the state) of the kept row it duplicates
    (-1 when kept). Only the rows given take part; a row is compared with earlier kept rows only."""
    if not 0.0 < near_threshold <= 1.0:
        raise ValueError(f"near_threshold must be in (0, 1], got {near_threshold}")
    rows = np.asarray(rows, dtype=np.int64)
    m = rows.size
    kind = np.zeros(m, dtype=np.int8)
    of = np.full(m, -1, dtype=np.int64)
    if m == 0:
        return kind, of
    if m >= 2**32:
        raise ValueError("dedup takes at most 2**32 rows at once")
    if exact:
        ek = state.exact_keys()
        first = _first_of_group(ek[rows, 0], ek[rows, 1])
        del ek
        dup = first != np.arange(m)
        kind[dup], of[dup] = 1, rows[first[dup]]
    if near:
        pos = np.flatnonzero(kind == 0)
        found = []
        for b in range(state.n_bands):  # one band at a time: memory stays O(rows), not O(rows x bands)
            found.append(_band_pairs(pos, state.band(b)[rows[pos]]))
        pairs = np.unique(np.concatenate(found)) if found else np.empty(0, dtype=np.uint64)  # by later, earlier
        del found
        p = (pairs >> np.uint64(32)).astype(np.int64)
        e = (pairs & np.uint64(0xFFFFFFFF)).astype(np.int64)
        del pairs
        good = np.zeros(p.size, dtype=bool)
        for lo in range(0, p.size, _VERIFY_CHUNK):  # estimated Jaccard of every candidate pair
            mine = state.sig_rows(rows[p[lo : lo + _VERIFY_CHUNK]])
            theirs = state.sig_rows(rows[e[lo : lo + _VERIFY_CHUNK]])
            est = (mine == theirs).sum(axis=1) / mine.shape[1]
            good[lo : lo + _VERIFY_CHUNK] = est >= near_threshold
        p, e = p[good].tolist(), e[good].tolist()
        kept = kind == 0
        for pi, ei in zip(p, e, strict=True):  # later rows ascending, each one's candidates ascending
            if kept[pi] and kept[ei]:  # the smallest kept candidate that matches
                kind[pi], of[pi] = 2, rows[ei]
                kept[pi] = False
    return kind, of


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
    kind, of = decide_arrays(state, rows, exact=exact, near=near, near_threshold=near_threshold)
    names = (None, "exact", "near")
    return ([names[k] for k in kind.tolist()],
            [None if o < 0 else ids[o] for o in of.tolist()])


def find_duplicates(
    table: pl.DataFrame,
    *,
    exact: bool = True,
    near: bool = True,
    near_threshold: float = 0.8,
    num_perm: int = 128,
    ngram: int = 3,
    fields: Sequence[str] = TEXT_FIELDS,
    same_context: bool = False,
) -> tuple[list[str | None], list[str | None]]:
    """Per row: (``"exact"`` / ``"near"`` / None, id of the kept row it duplicates or None);
    ``same_context``: near duplicates only among rows of one context (:func:`near_inputs`)."""
    if not 0.0 < near_threshold <= 1.0:
        raise ValueError(f"near_threshold must be in (0, 1], got {near_threshold}")
    state = dedup_state(row_texts(table, fields), near_threshold=near_threshold, num_perm=num_perm, ngram=ngram,
                        near=near_inputs(table, fields, same_context))
    return decide(state, table["id"].to_list(), np.arange(table.height), exact=exact, near=near,
                  near_threshold=near_threshold)
