"""Dedup: exact duplicates (hash of normalised text) and near duplicates (MinHash LSH, datasketch).

    from instruct_selectors.dedup import find_duplicates
    kind, dup_of = find_duplicates(table, near_threshold=0.8)

The first row (in table order) of each group is kept; every later member is marked
``"exact"`` or ``"near"`` with the id of the kept row it duplicates. Text = instruction, context
and response joined, normalised (NFKC, case-folded, whitespace collapsed) before hashing or
shingling. Near duplicates use word n-gram shingles; LSH candidates are confirmed against the
MinHash Jaccard estimate, and a row is compared only with rows that were kept, so chains
(a~b, b~c, a!~c) do not drop c through b.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import polars as pl
from datasketch import MinHash, MinHashLSH

from pipelines.schema import normalise_text

TEXT_FIELDS = ("instruction", "context", "response")


def row_texts(table: pl.DataFrame, fields: Sequence[str] = TEXT_FIELDS) -> list[str]:
    """Normalised text of each row (fields joined with a separator no text contains)."""
    cols = [table[f].fill_null("").to_list() for f in fields]
    return [normalise_text("\x1f".join(parts)) for parts in zip(*cols, strict=True)]


def exact_key(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def shingles(text: str, n: int = 3) -> set[str]:
    """Word n-grams; texts shorter than n words give the whole text as one shingle."""
    words = text.split()
    if len(words) < n:
        return {text}
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


def minhash(text: str, num_perm: int = 128, ngram: int = 3, seed: int = 1) -> MinHash:
    m = MinHash(num_perm=num_perm, seed=seed)
    m.update_batch([s.encode("utf-8") for s in shingles(text, ngram)])
    return m


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
    texts, ids = row_texts(table, fields), table["id"].to_list()
    kind: list[str | None] = [None] * len(texts)
    dup_of: list[str | None] = [None] * len(texts)
    seen: dict[str, int] = {}
    lsh = MinHashLSH(threshold=near_threshold, num_perm=num_perm) if near else None
    hashes: dict[int, MinHash] = {}
    for i, text in enumerate(texts):
        if exact:
            key = exact_key(text)
            if key in seen:
                kind[i], dup_of[i] = "exact", ids[seen[key]]
                continue
            seen[key] = i
        if lsh is not None:
            m = minhash(text, num_perm, ngram)
            # LSH gives candidates; confirm with the Jaccard estimate so the threshold means what it says.
            matches = [j for j in lsh.query(m) if hashes[j].jaccard(m) >= near_threshold]
            if matches:
                kind[i], dup_of[i] = "near", ids[min(matches)]
                continue
            lsh.insert(i, m)
            hashes[i] = m
    return kind, dup_of
