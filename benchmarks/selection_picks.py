"""Which score drives a ranking's picks (issue 34: why the default picked 2-token answers).

    python -m benchmarks.selection_picks runs/selection_bench/scored_pool_quoref.parquet

For a scored pool (benchmarks.selection keeps one per target in --cache-dir): each score's rank
correlation with the response's length, and for each score alone, the shipped default's fusion
and the fusion with length, what the top 10% would be -- median response characters and the
three commonest task types. A score that correlates negatively with length and whose top rows
are short is the one pulling the picks short. Last line: ``default_top_median_chars=`` (the
shipped fusion's picks)."""

from __future__ import annotations

import argparse

import polars as pl
from instruct_selectors.policies import select
from scipy.stats import spearmanr

from flows.config_choose import LENGTH_COLUMN as LENGTH
from pipelines.schema import meta_field


def top_profile(pool: pl.DataFrame, top: dict, k: int) -> dict:
    """Median response characters and the commonest task types of the ``k`` rows ``top`` keeps."""
    kept = select(pool, [{"top_k": {**top, "k": k}}])[0].filter(pl.col("keep"))
    kinds = meta_field(kept, "task_type").value_counts(sort=True).head(3).rows()
    return {"median_chars": float(kept[LENGTH].median()), "types": kinds}


def profiles(pool: pl.DataFrame, fused: list[str], fraction: float = 0.1) -> list[tuple[str, float, dict]]:
    """(ranking, Spearman with length, top profile) for every score column alone, the ``fused``
    columns' rank fusion and that fusion with length."""
    if LENGTH not in pool.columns:
        pool = pool.with_columns(pl.col("response").str.len_chars().cast(pl.Float64).alias(LENGTH))
    k, length = max(1, round(fraction * pool.height)), pool[LENGTH].to_numpy().astype(float)
    out = []
    for column in [c for c in pool.columns if c.startswith("score_")] + [LENGTH]:
        rho = float(spearmanr(pool[column].to_numpy().astype(float), length, nan_policy="omit").statistic)
        out.append((column, rho, top_profile(pool, {"column": column}, k)))
    for name, cols in (("fusion " + "+".join(fused), fused), ("fusion + length", [*fused, LENGTH])):
        out.append((name, float("nan"), top_profile(pool, {"fuse": cols}, k)))
    return out


def main(argv: list[str] | None = None) -> None:
    from benchmarks.selection import default_steps

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scored_pool", help="a scored_pool_<target>.parquet from benchmarks.selection's --cache-dir")
    ap.add_argument("--fraction", type=float, default=0.1)
    args = ap.parse_args(argv)
    pool = pl.read_parquet(args.scored_pool)
    ranking = default_steps(args.fraction)[-1]["top_k"]
    fused = ranking.get("fuse") or [ranking["column"]]
    print(f"pool {pool.height} rows, median response {pool['response'].str.len_chars().median():.0f} characters")
    found = profiles(pool, fused, args.fraction)
    for name, rho, prof in found:
        kinds = ", ".join(f"{t}={n}" for t, n in prof["types"])
        print(f"{name:40s} spearman(length) {rho:+.2f}  top median {prof['median_chars']:5.0f} chars  {kinds}")
    print(f"default_top_median_chars={found[-2][2]['median_chars']:.0f}")  # the shipped fusion's picks


if __name__ == "__main__":
    main()
