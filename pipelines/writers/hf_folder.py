"""Hugging Face ``save_to_disk`` folders, written atomically and, from Parquet shards, in bounded memory.

    from pipelines.writers.hf_folder import atomic_save_to_disk, save_parquet_shards_to_disk
    atomic_save_to_disk(ds, Path("dataset/hf"))                      # an in-memory Dataset
    save_parquet_shards_to_disk(shards, features, Path("dataset/hf")) # a table bigger than memory

Both give a folder that ``datasets.load_from_disk`` reads. The second one streams each Parquet
shard a record batch at a time through ``datasets``' own ``ArrowWriter`` (the writer
``save_to_disk`` uses) instead of building a memory-mapped dataset and saving it: reading a
memory-mapped dataset back touches every page of it, and those pages count in the process's
resident memory (2 GB for a 1.8 GB export). ``state.json`` and ``dataset_info.json`` are written
the way ``Dataset.save_to_disk`` writes them (datasets 5.x), which the tests check by loading.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.shards import remove_stale_temps

if TYPE_CHECKING:
    import datasets
    import polars as pl

MAX_SHARD_BYTES = 500 * 10**6  # datasets.config.MAX_SHARD_SIZE ("500MB")
BATCH_ROWS = 1000  # datasets.config.DEFAULT_MAX_BATCH_SIZE: rows per record batch


@contextmanager
def atomic_folder(path: Path) -> Iterator[Path]:
    """Yield a temp path beside ``path`` (not yet created) to build the new folder at; on success it
    replaces ``path`` (same file system, so the renames are atomic): a killed or failed write leaves
    the old folder or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)  # a killed export's half-written folder
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp / "new"
        if path.exists():
            os.replace(path, tmp / "old")  # removed with tmp below
        os.replace(tmp / "new", path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def atomic_save_to_disk(ds: datasets.Dataset, path: Path) -> None:
    """``ds.save_to_disk(path)``, atomically (see :func:`atomic_folder`)."""
    with atomic_folder(path) as tmp:
        ds.save_to_disk(str(tmp))


def content_fingerprint(files: Sequence[Path | str]) -> str:
    """A hash of the files' bytes: identical rows give an identical HF fingerprint, so a re-export
    writes identical files (``datasets`` would otherwise draw a random one)."""
    digest = hashlib.blake2b(digest_size=8)
    for p in files:
        with open(p, "rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


def save_parquet_shards_to_disk(shards: Sequence[Path | str], features: datasets.Features, path: Path) -> int:
    """The rows of ``shards`` (in order) as a ``load_from_disk`` folder at ``path``, atomically.

    Memory stays at one record batch (see :class:`HFFolderWriter`). Returns the number of rows."""
    writer = HFFolderWriter(path, features)
    try:
        for shard in shards:
            for batch in pq.ParquetFile(shard, pre_buffer=False).iter_batches(batch_size=BATCH_ROWS):
                writer.add(pa.Table.from_batches([batch]))
    except BaseException:
        writer.abort()
        raise
    return writer.close()


class HFFolderWriter:
    """A ``load_from_disk`` folder at ``path`` written as rows arrive (Arrow tables, in order),
    through ``datasets``' own ``ArrowWriter`` (the writer ``save_to_disk`` uses): record batches
    of ``BATCH_ROWS`` rows whatever the pieces, files of at most about 500 MB (as
    ``save_to_disk`` splits them), the folder in place at :meth:`close` (atomically) and gone
    at :meth:`abort`. Memory holds one batch; the same rows give the same bytes."""

    def __init__(self, path: Path, features: datasets.Features):
        self.path, self.features = Path(path), features
        self._atomic = atomic_folder(self.path)
        self.tmp = self._atomic.__enter__()
        self.tmp.mkdir()
        self.files: list[Path] = []
        self.rows = self._file_bytes = 0
        self._writer = None
        self._pending: pa.Table | None = None  # fewer than BATCH_ROWS rows, waiting for more

    def add(self, table: pa.Table) -> None:
        if self._pending is not None:  # permissive: a piece whose column is all null types it as null
            table = pa.concat_tables([self._pending, table], promote_options="permissive")
        self._pending = table
        while self._pending.num_rows >= BATCH_ROWS:
            self._write(self._pending.slice(0, BATCH_ROWS))
            self._pending = self._pending.slice(BATCH_ROWS)

    def _write(self, batch: pa.Table) -> None:
        from datasets.arrow_writer import ArrowWriter

        if self._writer is None:
            self.files.append(self.tmp / f"part-{len(self.files)}.arrow")
            self._writer = ArrowWriter(features=self.features, path=str(self.files[-1]), writer_batch_size=BATCH_ROWS)
            self._file_bytes = 0
        batch = batch.combine_chunks()
        self._writer.write_table(batch)
        self.rows += batch.num_rows
        self._file_bytes += batch.nbytes
        if self._file_bytes >= MAX_SHARD_BYTES:
            self._finish_file()

    def _finish_file(self) -> None:
        self._writer.finalize()
        self._writer.close()
        self._writer = None

    def close(self) -> int:
        """Write what is pending, the folder's state and info, and put it in place; the rows written."""
        import datasets
        from datasets.arrow_writer import ArrowWriter
        from datasets.utils.py_utils import asdict

        if self._pending is not None and self._pending.num_rows:
            self._write(self._pending)
        self._pending = None
        if self._writer is not None:
            self._finish_file()
        tmp = self.tmp
        if not self.files:  # no rows: one empty file with the schema, as save_to_disk writes
            self.files.append(tmp / "part-0.arrow")
            self._writer = ArrowWriter(features=self.features, path=str(self.files[-1]))
            self._finish_file()
        names = [f"data-{i:05d}-of-{len(self.files):05d}.arrow" for i in range(len(self.files))]
        for f, name in zip(self.files, names, strict=True):
            os.replace(f, tmp / name)
        state = {
            "_data_files": [{"filename": n} for n in names],
            "_fingerprint": content_fingerprint([tmp / n for n in names]),
            "_format_columns": None,
            "_format_kwargs": {},
            "_format_type": None,
            "_output_all_columns": False,
            "_split": None,
        }
        (tmp / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True), encoding="utf-8")
        info = asdict(datasets.DatasetInfo(features=self.features))
        (tmp / "dataset_info.json").write_text(json.dumps({k: info[k] for k in sorted(info)}, indent=2),
                                               encoding="utf-8")
        self._atomic.__exit__(None, None, None)
        return self.rows

    def abort(self) -> None:
        """Drop the folder being written (an older one at ``path`` stays)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._atomic.__exit__(RuntimeError, RuntimeError("export aborted"), None)


def plain_type(t: pa.DataType) -> pa.DataType:
    """large_string -> string, large_list -> list (recursively): the usual HF feature types."""
    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.string()
    if pa.types.is_large_list(t) or pa.types.is_list(t) or pa.types.is_list_view(t):
        return pa.list_(plain_type(t.value_type))
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, plain_type(f.type), f.nullable) for f in t])
    return t


def hf_features(rows: pl.DataFrame) -> datasets.Features:
    """The HF features of a table's columns (plain types)."""
    import datasets

    schema = pa.schema([pa.field(f.name, plain_type(f.type)) for f in rows.head(0).to_arrow().schema])
    return datasets.Features.from_arrow_schema(schema)


def to_hf_dataset(rows: pl.DataFrame) -> datasets.Dataset:
    """An in-memory ``datasets.Dataset`` of the exported rows (fingerprint = hash of the content)."""
    import datasets

    return datasets.Dataset.from_polars(rows, features=hf_features(rows))
