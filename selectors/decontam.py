"""Decontamination: mark rows that share a word n-gram (13 by default) with an evaluation set.

    from instruct_selectors.decontam import build_index, mark
    index = build_index({"alpaca_eval.json": eval_table}, n=13)      # once per run
    shard = mark(shard, index)     # adds contaminated_by: "alpaca_eval.json:37" (null when clean)

The usual test of benchmark leakage (GPT-3's 13-gram overlap, as in NeMo Curator and datatrove):
text is normalised (lower case, every run of non-alphanumeric characters is one space) and
split into words; a row is contaminated when any n consecutive words of its instruction, context
or response also occur in any field of an eval row. n-grams are 64-bit hashes (a polynomial over
polars' per-word hashes, rolled over all texts of a shard at once with numpy), so an eval set
becomes one sorted array built once, and marking a shard is one vectorised membership test: the
select stage streams shards through :func:`mark`. (polars' hash is stable within a process, which
is all this needs: the index is built in the process that marks.) Texts shorter than n words have no n-gram and never match (an eval set of
very short rows needs a smaller n). ``contaminated_by`` lists each eval file that overlapped with
the number of distinct n-grams shared, most first, e.g. ``"alpaca_eval.json:37, other.jsonl:13"``;
the ``decontaminate`` selection step drops the rows where it is set.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

COLUMN = "contaminated_by"
TEXT_FIELDS = ("instruction", "context", "response")
_WORD = r"[^\W_]+"  # words: runs of letters and digits; everything else separates them
_BASE = np.uint64(0x100000001B3)  # odd multiplier of the rolling combination (FNV prime)
_SEED = 13  # polars' hash seed: the index and the rows are hashed in the same process


def _word_table(texts: pl.Series | Sequence[str]) -> pl.DataFrame:
    """One row per normalised word: (text number, word), in text order (polars, vectorised)."""
    series = texts if isinstance(texts, pl.Series) else pl.Series(list(texts), dtype=pl.Utf8)
    words_ = series.alias("w").str.to_lowercase().str.extract_all(_WORD)  # ~10% faster than replace + split
    return (pl.DataFrame({"text": np.arange(len(texts), dtype=np.int64), "w": words_})
            .explode("w").filter(pl.col("w").is_not_null()))


def words(text: str) -> list[str]:
    """Normalised words: lower case; punctuation and whitespace runs are separators."""
    return _word_table([text])["w"].to_list()


CHUNK_ROWS = 5_000  # rows per n-gram batch in overlaps (bounds its temporary arrays)


def _ngrams(texts: pl.Series | Sequence[str], n: int) -> tuple[np.ndarray, np.ndarray]:
    """(uint64 hash of every word n-gram, the number of the text it is in), all texts at once."""
    table = _word_table(texts)
    h = table["w"].hash(seed=_SEED).to_numpy().astype(np.uint64)
    text = table["text"].to_numpy()
    m = h.size - n + 1
    if m <= 0:
        return np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.int64)
    grams = np.zeros(m, dtype=np.uint64)
    with np.errstate(over="ignore"):  # arithmetic mod 2**64 is the point
        for k in range(n):
            grams = grams * _BASE + h[k : k + m]
    inside = text[:m] == text[n - 1 :]  # windows that do not cross from one text into the next
    return grams[inside], text[:m][inside]


def ngram_hashes(text: str, n: int) -> np.ndarray:
    """uint64 hashes of every word n-gram of ``text`` (empty when it has fewer than n words)."""
    return _ngrams([text], n)[0]


def _texts(table: pl.DataFrame, fields: Sequence[str]) -> tuple[pl.Series | list[str], np.ndarray]:
    """Every non-empty field of every row, and the row each comes from."""
    parts = [table.select(pl.int_range(pl.len(), dtype=pl.Int64).alias("row"), pl.col(f).alias("t"))
             for f in fields if f in table.columns]
    if not parts:
        return [], np.empty(0, dtype=np.int64)
    both = pl.concat(parts).filter(pl.col("t").is_not_null() & (pl.col("t") != ""))
    return both["t"], both["row"].to_numpy()


def _member(grams: np.ndarray, known: np.ndarray) -> np.ndarray:
    """grams found in the sorted array ``known`` (binary search: the shard is never sorted)."""
    if known.size == 0:
        return np.zeros(grams.size, dtype=bool)
    at = np.minimum(np.searchsorted(known, grams), known.size - 1)
    return known[at] == grams


@dataclass(frozen=True)
class Index:
    """Sorted unique n-gram hashes per eval set, and n."""

    n: int
    sets: dict[str, np.ndarray]

    def sizes(self) -> dict[str, int]:
        return {name: int(a.size) for name, a in self.sets.items()}


def build_index(eval_sets: Mapping[str, pl.DataFrame], n: int = 13,
                fields: Sequence[str] = TEXT_FIELDS) -> Index:
    """One sorted hash array per eval set (name -> its rows)."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    sets = {}
    for name, table in eval_sets.items():
        texts, _ = _texts(table, fields)
        sets[name] = np.unique(_ngrams(texts, n)[0])
    return Index(n, sets)


def overlaps(table: pl.DataFrame, index: Index, fields: Sequence[str] = TEXT_FIELDS,
             chunk_rows: int = CHUNK_ROWS) -> dict[str, np.ndarray]:
    """Per eval set, the number of distinct n-grams each row shares with it. ``chunk_rows`` rows at
    a time: n-grams never cross rows, and a shard's word table at once held several hundred MB."""
    if table.height > chunk_rows:
        parts = [_overlaps(table.slice(lo, chunk_rows), index, fields) for lo in range(0, table.height, chunk_rows)]
        return {name: np.concatenate([p[name] for p in parts]) for name in index.sets}
    return _overlaps(table, index, fields)


def _overlaps(table: pl.DataFrame, index: Index, fields: Sequence[str]) -> dict[str, np.ndarray]:
    texts, text_row = _texts(table, fields)
    grams, text = _ngrams(texts, index.n)
    rows = text_row[text]
    out = {}
    for name, known in index.sets.items():
        hit = _member(grams, known)
        # distinct (row, n-gram) pairs, so a phrase repeated in a row counts once
        pairs = np.unique(np.stack([rows[hit].astype(np.uint64), grams[hit]]), axis=1)
        out[name] = np.bincount(pairs[0].astype(np.int64), minlength=table.height)
    return out


def mark(table: pl.DataFrame, index: Index, fields: Sequence[str] = TEXT_FIELDS) -> pl.DataFrame:
    """``table`` with ``contaminated_by`` ("name:count, ..." most first; null when clean)."""
    counts = overlaps(table, index, fields)
    labels: list[str | None] = []
    for i in range(table.height):
        hits = sorted(((-int(c[i]), name) for name, c in counts.items() if c[i]), key=lambda x: x)
        labels.append(", ".join(f"{name}:{-c}" for c, name in hits) or None)
    return table.with_columns(pl.Series(COLUMN, labels, dtype=pl.Utf8))


def contamination_counts(table: pl.DataFrame) -> dict[str, int]:
    """Rows contaminated per eval set (a row may count for several) and in total, from the column."""
    per: dict[str, int] = {}
    values = [v for v in table[COLUMN].to_list() if v] if COLUMN in table.columns else []
    for v in values:
        for part in v.split(", "):
            name = part.rsplit(":", 1)[0]
            per[name] = per.get(name, 0) + 1
    return {"rows": len(values), "per_eval_set": per}
