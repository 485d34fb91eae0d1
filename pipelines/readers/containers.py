"""Path -> records: picks the container reader from the path.

    for rec in iter_records(Path("data.jsonl")): rec.value, rec.line, rec.parse_error

``.jsonl``/``.ndjson`` (:mod:`~pipelines.readers.jsonl`), ``.json``
(:mod:`~pipelines.readers.json_doc`), ``.parquet`` or a folder of them
(:mod:`~pipelines.readers.parquet`), a ``save_to_disk`` folder (:mod:`~pipelines.readers.hf`).
Records come in file order; fatal problems raise :class:`InputError`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from pipelines.readers.hf import iter_hf, looks_like_hf_dataset
from pipelines.readers.json_doc import iter_json_doc
from pipelines.readers.jsonl import iter_jsonl
from pipelines.readers.parquet import iter_parquet
from pipelines.readers.records import MAX_LINE_BYTES, InputError, Record


def iter_records(
    path: Path | str,
    split: str | None = None,
    strict_encoding: bool = False,
    max_line_bytes: int = MAX_LINE_BYTES,
    buffer: int = 1 << 20,
) -> Iterator[Record]:
    """Records of any supported container, in file order (raises InputError for fatal problems).

    A record holding bytes that do not decode comes back with a ``parse_error`` (a reject of its
    own: every other record is read) unless ``strict_encoding``, where it is fatal for the file."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found")
    if looks_like_hf_dataset(path):
        yield from iter_hf(path, split, strict_encoding)
    elif path.suffix == ".parquet" or (path.is_dir() and any(path.glob("*.parquet"))):
        yield from iter_parquet(path, strict_encoding)
    elif path.is_dir():
        raise InputError(path, "a folder that is neither a saved HF dataset nor a folder of Parquet files")
    elif path.suffix in (".jsonl", ".ndjson"):
        yield from iter_jsonl(path, strict_encoding, max_line_bytes, buffer)
    elif path.suffix == ".json":
        yield from iter_json_doc(path, strict_encoding, max_line_bytes)
    elif path.suffix == ".txt":
        raise InputError(path, "plain text holds passages, not examples: use read_passages()")
    else:
        raise InputError(
            path, f"unknown file type {path.suffix!r}: use .jsonl, .json, .parquet or a saved HF dataset"
        )
