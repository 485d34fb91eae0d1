"""Selection over shards without holding the texts or the ids: the same result as
:func:`policies.select` on the concatenated shards, with memory that grows by a few fixed-width
numbers a row.

    from instruct_selectors.stream_select import select_shards
    summary, rows = select_shards(shard_paths, steps, out_path)

Pass 1 reads each shard once and keeps only what the steps decide from
(:class:`~instruct_selectors.compact_select.Compact`): two 64-bit keys of each id (its first 16
bytes, for ties, which are broken by id; rows whose keys collide have their full ids read again),
the score columns the steps name, quota strata as integer codes, seeded hash keys for random
steps and, per dedup step, the :class:`~instruct_selectors.dedup.DedupState`, written to files
under the run's temporary folder (exact keys, MinHash signatures, one file per LSH band), so a
decision loads one band at a time. :func:`compact_select.select_compact` decides on that state
with numpy sorts; keep / dropped_by / keep_reason / select_rank / dup_of and the summary are the
ones :func:`policies.select` gives. Pass 2 reads each shard again (with the columns ``prepare``
wrote in pass 1, not computed twice) and writes it with those columns as one row group of
``out_path`` (Parquet, written to a temporary file and renamed, so readers see either the old or
the whole new file); ``dup_of`` ids are read there from the rows they point at, which always
come earlier.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from instruct_selectors.compact_select import select_compact
from instruct_selectors.dedup import StateWriter, near_inputs, row_texts
from instruct_selectors.id_order import id_keys, id_rank
from instruct_selectors.policy_steps import (
    Dedup,
    Diversify,
    Quota,
    Ratio,
    parse_steps,
)
from instruct_selectors.steps.base import Compact, Result, Strata

from pipelines.progress import StageBar
from pipelines.read_ahead import ahead, ahead_map
from pipelines.schema import meta_field

# What selection adds to each row; they must not reach a trainer (pipelines.io reads a false
# `keep` as "drop the row"), so the train and choose stages drop them before training.
SELECTION_COLUMNS = ("keep", "dropped_by", "keep_reason", "select_rank", "dup_of")
Prepare = Callable[[pl.DataFrame], pl.DataFrame]
Shard = Path | pl.DataFrame  # a Parquet shard, or a table in memory (policies.select: one of them)


def _read(shard: Shard, columns: list[str] | None = None) -> pl.DataFrame:
    if isinstance(shard, pl.DataFrame):
        return shard if columns is None else shard.select(columns)
    return pl.read_parquet(shard, columns=columns)


def _height(shard: Shard) -> int:
    return shard.height if isinstance(shard, pl.DataFrame) else pq.ParquetFile(shard).metadata.num_rows


def _columns(shard: Shard) -> list[str]:
    return shard.columns if isinstance(shard, pl.DataFrame) else pq.read_schema(shard).names


def progress(paths: Sequence[Shard], desc: str | None, unit: str = "shard"):
    if desc is None:  # quiet
        yield from paths
        return
    bar = StageBar(desc, total=len(paths), unit=unit)
    try:
        for p in paths:
            yield p
            bar(1)
    finally:
        bar.close()


def needed_columns(steps: Sequence[Any], columns: Sequence[str]) -> list[str]:
    """The columns of a shard (``columns``) that the steps read, ``id`` first."""
    want = ["id"]
    for s in steps:
        want += s.reads()
        if isinstance(s, Quota):
            want.append(s.field if s.field in columns else "meta")
    out: list[str] = []
    for c in want:
        if c not in out and c in columns:
            out.append(c)
    return out


def _random_keys(ids: pl.Series, seed: int) -> np.ndarray:
    """The seeded key a random step (ratio, random quota) orders the rows by: 8-byte blake2b of the
    seed and the id, big-endian, as uint64 (so the draw depends on the ids, not the row order)."""
    return np.fromiter((int.from_bytes(hashlib.blake2b(f"{seed}\x1f{i}".encode(), digest_size=8).digest(), "big")
                        for i in ids.to_list()), dtype=np.uint64, count=ids.len())


class _StrataCodes:
    """Codes of one quota's meta-field values, assigned as shards come."""

    def __init__(self):
        self.index: dict[str, int] = {}
        self.parts: list[np.ndarray] = []

    def add(self, values: pl.Series) -> None:
        for v in values.drop_nulls().unique().to_list():
            self.index.setdefault(v, len(self.index))
        self.parts.append(values.replace_strict(list(self.index), list(self.index.values()), default=-1,
                                                return_dtype=pl.Int32).to_numpy())

    def finish(self) -> Strata:
        codes = np.concatenate(self.parts) if self.parts else np.empty(0, dtype=np.int32)
        return Strata(codes, list(self.index))


@dataclass
class _ShardState:
    """Pass 1's per-shard result: the columns ``prepare`` wrote, the compact columns, id keys,
    random keys and strata values per step, and each dedup step's hashes."""

    added: list[str]
    part: pl.DataFrame
    keys: np.ndarray
    rand: dict[int, np.ndarray]
    strata: dict[int, pl.Series]
    dedup: dict[int, list]


def select_shards(
    paths: Sequence[Shard],
    steps: Sequence[Any],
    out_path: Path,
    *,
    prepare: Prepare | None = None,
    carry: Sequence[str] = (),
    finish: Callable[[pl.DataFrame], Prepare] | None = None,
    workdir: Path | None = None,
    quiet: bool = False,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Select across ``paths`` (shards in order) and write every row with the selection columns to
    ``out_path``. Returns (summary, compact table: the columns the steps read, the carried columns
    and keep, dropped_by and keep_reason (as pl.Enum), select_rank, and dup_of_row (the row
    number, in shard order, of the kept row a duplicate duplicates) when a dedup step ran).

    ``prepare``: applied to each shard as read (both passes, e.g. decontamination marks);
    ``carry``: more columns to keep in the compact table; ``finish``: given the compact table
    after pass 1, returns a function applied to the compact table and to each shard before
    selection (e.g. flags whose cut-off is a quantile over all rows). ``paths`` may hold tables
    instead of Parquet files; ``quiet``: no progress bars."""
    steps = parse_steps(steps)
    prepare = prepare or (lambda t: t)
    paths = list(paths)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=workdir or out_path.parent, prefix=".select-") as tmp:
        writers = {i: StateWriter(Path(tmp), f"dedup{i}", near_threshold=s.near_threshold,
                                  num_perm=s.num_perm, ngram=s.ngram)
                   for i, s in enumerate(steps) if isinstance(s, Dedup)}
        seeds = {i: s.seed for i, s in enumerate(steps)
                 if isinstance(s, Ratio) or (isinstance(s, Quota) and s.random and not s.column)}
        strata: dict[int, _StrataCodes] = {}
        parts: list[pl.DataFrame] = []
        keys: list[np.ndarray] = []
        rand: dict[int, list[np.ndarray]] = {i: [] for i in seeds}
        marked: list[str] | None = None  # the columns ``prepare`` writes; pass 2 takes them from pass 1
        same_marks = True

        def read_marked(path: Shard) -> tuple[pl.DataFrame, list[str]]:
            raw = _read(path)
            shard = prepare(raw)
            return shard, [c for c in shard.columns
                           if c not in raw.columns or not shard[c].equals(raw[c], null_equal=True)]

        def row_state(item: tuple[pl.DataFrame, list[str]]) -> _ShardState:
            """What pass 1 keeps of a shard; pure, so shards are done in threads and the shard's
            texts are freed there."""
            shard, added = item
            skip = {"id", "meta"} | {s.column for s in steps if isinstance(s, Diversify)}
            keep = [c for c in needed_columns(steps, shard.columns) if c not in skip]
            return _ShardState(
                added=added,
                part=shard.select(list(dict.fromkeys(keep + [c for c in carry if c in shard.columns] + added))),
                keys=id_keys(shard["id"]),
                rand={i: _random_keys(shard["id"], seed) for i, seed in seeds.items()},
                strata={i: meta_field(shard, s.field) for i, s in enumerate(steps)
                        if isinstance(s, Quota) and s.field not in shard.columns},
                dedup={i: w.state_of(row_texts(shard, steps[i].fields),
                                      near_inputs(shard, steps[i].fields, steps[i].same_context))
                       for i, w in writers.items()})

        # The next shard is read and marked in a thread (one at a time: ``prepare`` may be user code),
        # while the ones after it are hashed in threads, one per core (pipelines.read_ahead).
        read = ahead(map(read_marked, progress(paths, desc=None if quiet else "select: pass 1 (per-row state)")))
        for done in ahead_map(row_state, read):
            same_marks &= marked is None or marked == done.added
            marked = done.added
            for i, values in done.strata.items():
                strata.setdefault(i, _StrataCodes()).add(values)
            parts.append(done.part)
            keys.append(done.keys)
            for i, r in done.rand.items():
                rand[i].append(r)
            for i, w in writers.items():
                w.append(done.dedup[i])
            del done
        compact = pl.concat(parts, how="vertical") if parts else pl.DataFrame()
        del parts
        # Marking (decontamination n-grams, row filters) is most of a pass: pass 2 reuses the
        # marks of pass 1 instead of computing them again (unless shards disagreed on the columns).
        again = _reuse(compact.select(marked)) if marked and same_marks else prepare
        all_keys = np.concatenate(keys) if keys else np.empty((0, 2), dtype=np.uint64)
        del keys
        rank = id_rank(all_keys, lambda rows: _read_ids(paths, rows))
        del all_keys
        tag = finish(compact) if finish else (lambda t: t)
        compact = tag(compact)
        state = Compact(compact, rank, strata={i: c.finish() for i, c in strata.items()},
                        random_keys={i: np.concatenate(r) if r else np.empty(0, np.uint64) for i, r in rand.items()},
                        dedup={i: w.finish() for i, w in writers.items()},
                        load=lambda rows, column: _load(paths, rows, column, lambda t: tag(prepare(t))))
        del strata, rand
        result, summary = select_compact(state, steps)
        del state
        _write(paths, out_path, result, lambda t: tag(again(t)), Path(tmp), None if quiet else "select: pass 2 (write)")
    cols = _result_columns(result, 0, result.rank.size, dup_ids=None)
    return summary, compact.with_columns(cols) if compact.width else pl.DataFrame(cols)


def _reuse(marks: pl.DataFrame) -> Prepare:
    """A ``prepare`` for pass 2 that attaches the next rows of ``marks`` to each shard, in order."""
    done = 0

    def attach(shard: pl.DataFrame) -> pl.DataFrame:
        nonlocal done
        part = marks.slice(done, shard.height)
        done += shard.height
        return shard.with_columns(part) if part.width else shard

    return attach


def _read_ids(paths: Sequence[Shard], rows: np.ndarray) -> list[str]:
    """The ids of ``rows`` (sorted row numbers over the shards in order), reading only ``id``."""
    out: list[str] = []
    offset = 0
    for path in paths:
        ids = _read(path, ["id"])["id"]
        lo, hi = np.searchsorted(rows, [offset, offset + ids.len()])
        out += ids.gather(rows[lo:hi] - offset).to_list()
        offset += ids.len()
    return out


def _load(paths: Sequence[Shard], rows: np.ndarray, column: str, prepare: Prepare) -> pl.DataFrame:
    """``column`` of ``rows`` (row numbers over the shards, any order), in that order."""
    want = np.sort(rows)
    got: list[pl.DataFrame] = []
    offset = 0
    for path in paths:
        n = _height(path)
        lo, hi = np.searchsorted(want, [offset, offset + n])
        if hi > lo:
            shard = _read(path, [column]) if column in _columns(path) else prepare(_read(path))
            if column not in shard.columns:
                return shard.select([])  # embedding_matrix says which column is missing
            got.append(shard.select(column)[want[lo:hi] - offset])
        offset += n
    table = pl.concat(got) if got else pl.DataFrame()
    return table[np.searchsorted(want, rows)]


def _result_columns(r: Result, lo: int, hi: int, dup_ids: pl.Series | None) -> list[pl.Series]:
    """The result columns of rows [lo, hi): as policies.select writes them when ``dup_ids`` (the
    dup_of ids of those rows) is given, else compact (enums and dup_of_row)."""
    dropped, rank = r.dropped[lo:hi], r.rank[lo:hi]
    enum = pl.Enum(list(dict.fromkeys(r.labels + [r.last])))
    labels = pl.Series(r.labels, dtype=enum if dup_ids is None else pl.Utf8)
    drop = pl.Series(dropped.astype(np.int64)).replace_strict(
        list(range(len(r.labels))), labels, default=None, return_dtype=labels.dtype)
    keep = dropped < 0
    reason = pl.Series([r.last], dtype=labels.dtype).gather(np.zeros(hi - lo, dtype=np.int64))
    cols = [
        pl.Series("keep", keep, dtype=pl.Boolean),
        drop.alias("dropped_by"),
        reason.set(pl.Series(~keep), None).alias("keep_reason") if hi > lo else reason.alias("keep_reason"),
        pl.Series("select_rank", rank, dtype=pl.Int64).set(pl.Series(~keep), None).alias("select_rank"),
    ]
    if r.has_dedup:
        if dup_ids is None:
            of = r.dup_of[lo:hi]
            cols.append(pl.Series("dup_of_row", of, dtype=pl.Int64).set(pl.Series(of < 0), None))
        else:
            cols.append(dup_ids.alias("dup_of"))
    return cols


def _write(paths: Sequence[Shard], out_path: Path, result: Result, prepare: Prepare, tmp: Path,
           desc: str | None) -> None:
    part = tmp / out_path.name
    writer: pq.ParquetWriter | None = None
    schema: pa.Schema | None = None
    offset = 0
    targets = np.unique(result.dup_of[result.dup_of >= 0])  # rows some duplicate points at
    target_ids = pl.Series("dup_of", [], dtype=pl.Utf8)  # ids of targets[:len], read as shards come
    try:
        for path, shard in ahead((path, prepare(_read(path))) for path in progress(paths, desc=desc)):
            n = shard.height
            lo, hi = np.searchsorted(targets, [offset, offset + n])
            target_ids.append(shard["id"].gather(targets[lo:hi] - offset))
            of = result.dup_of[offset : offset + n]
            if (of >= 0).any():
                dup_ids = target_ids.gather(np.searchsorted(targets, np.where(of < 0, of.max(), of)))
                dup_ids = dup_ids.set(pl.Series(of < 0), None)
            else:
                dup_ids = pl.Series([None] * n, dtype=pl.Utf8)
            shard = shard.with_columns(_result_columns(result, offset, offset + n, dup_ids))
            offset += n
            arrow = shard.to_arrow()
            if writer is None:
                schema = arrow.schema
                writer = pq.ParquetWriter(part, schema, compression="zstd", write_statistics=False)
            elif arrow.schema != schema:
                try:
                    arrow = arrow.cast(schema)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as e:
                    raise ValueError(f"{path}: its columns do not match the first shard's ({e})") from None
            writer.write_table(arrow)
        if writer is None:  # no shards: an empty table with the result columns
            empty = _result_columns(result, 0, 0, pl.Series([], dtype=pl.Utf8))
            pl.DataFrame(schema={"id": pl.Utf8, **{c.name: c.dtype for c in empty}}).write_parquet(part)
    finally:
        if writer is not None:
            writer.close()
    part.replace(out_path)
