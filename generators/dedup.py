"""Remove near-duplicate generated texts (normalised hash + MinHash LSH), with counts.

    from generators.dedup import dedup_rows
    kept, dropped, counts = dedup_rows(questions, column="question", id_column="question_id")
    counts  # {"input": 120, "exact": 7, "near": 4, "kept": 109}

The matching itself is the selectors' (:func:`instruct_selectors.dedup.find_duplicates`: NFKC,
case-folded, whitespace-collapsed text; word 3-gram MinHash confirmed against the Jaccard
estimate), run here on one column. ``group`` restricts matching to rows of the same group (Bonito:
the same passage, since one question asked of two different passages is two examples).
The first row of each duplicate group is kept, so the result does not depend on anything but
the table's order.
"""

from __future__ import annotations

import polars as pl
from instruct_selectors.dedup import find_duplicates


def dedup_rows(
    table: pl.DataFrame,
    column: str,
    id_column: str,
    near_threshold: float = 0.8,
    group: str | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, int]]:
    """(kept rows, dropped rows with ``dup_kind`` and ``dup_of``, counts)."""
    counts = {"input": table.height, "exact": 0, "near": 0, "kept": table.height}
    if table.height == 0:
        empty = table.with_columns(
            pl.lit(None, pl.Utf8).alias("dup_kind"), pl.lit(None, pl.Utf8).alias("dup_of")
        )
        return table, empty, counts
    kinds: list[str | None] = [None] * table.height
    dup_of: list[str | None] = [None] * table.height
    indexed = table.with_row_index("_row")
    parts = indexed.partition_by(group, maintain_order=True) if group else [indexed]
    for part in parts:
        probe = pl.DataFrame({"id": part[id_column].cast(pl.Utf8), column: part[column].fill_null("")})
        k, d = find_duplicates(probe, near_threshold=near_threshold, fields=(column,))
        for row, kind, of in zip(part["_row"].to_list(), k, d, strict=True):
            kinds[row], dup_of[row] = kind, of
    marked = table.with_columns(pl.Series("dup_kind", kinds, pl.Utf8), pl.Series("dup_of", dup_of, pl.Utf8))
    kept = marked.filter(pl.col("dup_kind").is_null()).drop("dup_kind", "dup_of")
    dropped = marked.filter(pl.col("dup_kind").is_not_null())
    counts.update(
        exact=kinds.count("exact"),
        near=kinds.count("near"),
        kept=kept.height,
    )
    return kept, dropped, counts
