"""A Parquet file, or a folder of ``*.parquet`` files (in name order), a record batch at a time.

    for rec in iter_parquet(Path("data.parquet")): rec.value, rec.file, rec.row

Each record names its own file and its row there. A string cell that is not UTF-8 rejects its
row (naming the column), or is fatal for the file with ``strict_encoding``. Memory holds one batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl

from pipelines.readers.arrow import arrow_record, arrow_rows
from pipelines.readers.records import InputError, Record, not_utf8

BATCH_ROWS = 10_000


def parquet_files(path: Path) -> list[Path]:
    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    if not files:
        raise InputError(path, "no *.parquet files in this folder")
    return files


def _valid(batch: Any) -> bool:
    """Whether every string cell of the batch is UTF-8."""
    import pyarrow as pa

    try:
        batch.validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


def iter_parquet(path: Path, strict_encoding: bool = False, batch_rows: int = BATCH_ROWS) -> Iterator[Record]:
    import pyarrow.parquet as pq

    n = 0
    for f in parquet_files(path):
        row = 0
        try:
            batches = pq.ParquetFile(f, pre_buffer=False).iter_batches(batch_size=batch_rows)
            for batch in batches:
                if _valid(batch):
                    rows = [(r, None) for r in pl.from_arrow(batch).iter_rows(named=True)]
                else:  # Arrow stores strings unchecked (and polars would crash on them)
                    rows = list(arrow_rows(batch))
                for values, bad in rows:
                    row += 1
                    if bad is not None and strict_encoding:
                        raise InputError(f, f"row {row}: {not_utf8(bad[1])}", field=bad[0])
                    n += 1
                    yield arrow_record(values, bad, n, file=f if f != path else None, row=row)
        except InputError:
            raise
        except Exception as e:  # noqa: BLE001 -- pyarrow raises several types for corrupt files
            raise InputError(f, f"not a readable Parquet file: {e}") from None
