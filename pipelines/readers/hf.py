"""A folder written by ``datasets``' ``save_to_disk`` (a Dataset, or one split of a DatasetDict).

    if looks_like_hf_dataset(path): records = iter_hf(path, split="train")

A string cell that is not UTF-8 rejects its row (naming the column), or is fatal with
``strict_encoding``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from pipelines.readers.arrow import arrow_record, arrow_rows
from pipelines.readers.records import InputError, Record, not_utf8


def looks_like_hf_dataset(path: Path) -> bool:
    return path.is_dir() and any(
        (path / name).exists() for name in ("dataset_info.json", "state.json", "dataset_dict.json")
    )


def iter_hf(path: Path, split: str | None = None, strict_encoding: bool = False) -> Iterator[Record]:
    from datasets import DatasetDict, load_from_disk

    ds = load_from_disk(str(path))
    if isinstance(ds, DatasetDict):
        names = list(ds)
        chosen = split or ("train" if "train" in names else names[0] if len(names) == 1 else None)
        if chosen not in ds:
            raise InputError(path, f"dataset has splits {names}; choose one with split=...")
        ds = ds[chosen]
    done = 0
    try:
        for i, row in enumerate(ds, start=1):
            yield Record(row, None, i)
            done = i
    except UnicodeDecodeError as e:  # Arrow does not check string columns when it reads them
        if strict_encoding:
            raise InputError(path, f"row {done + 1}: {not_utf8(e.object[e.start])}") from None
        for i, (row, bad) in enumerate(arrow_rows(ds.flatten_indices().data.table), start=1):
            if i > done:
                yield arrow_record(row, bad, i)
