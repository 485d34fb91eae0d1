"""Rows of Arrow data whose string cells may hold bytes that are not UTF-8 (Arrow stores strings
unchecked): shared by the Parquet and saved-HF-dataset readers.

    for values, bad in arrow_rows(table): ...      # bad: None, or (column, the byte)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from pipelines.readers.records import Record, json_safe, not_utf8


def arrow_rows(table: Any) -> Iterator[tuple[dict[str, Any], tuple[str, int] | None]]:
    """``(row, None)``, or ``(row, (column, bad byte))`` with that column's text decoded with
    replacement characters (for the rejects file), for each row of a pyarrow Table or RecordBatch."""
    import pyarrow as pa

    columns: dict[str, tuple[bool, list[Any]]] = {}
    for name in table.column_names:
        col = table.column(name)
        as_bytes = {pa.string(): pa.binary(), pa.large_string(): pa.large_binary()}.get(col.type)
        chunks = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
        if as_bytes is None:
            columns[name] = (False, col.to_pylist())
        else:
            columns[name] = (True, [v for chunk in chunks for v in chunk.view(as_bytes).to_pylist()])
    for i in range(table.num_rows):
        row, bad = {}, None
        for name, (is_text, values) in columns.items():
            value = values[i]
            if is_text and value is not None:
                try:
                    value = value.decode("utf-8")
                except UnicodeDecodeError as e:
                    bad = bad or (name, value[e.start])
                    value = value.decode("utf-8", "replace")
            row[name] = value
        yield row, bad


def arrow_record(values: dict[str, Any], bad: tuple[str, int] | None, record: int, **where: Any) -> Record:
    """A row from :func:`arrow_rows` as a record, or as an encoding reject naming its column."""
    if bad is None:
        return Record(values, None, record, **where)
    raw = json.dumps(json_safe(values), ensure_ascii=False, default=str)
    return Record(None, None, record, raw=raw, parse_error=not_utf8(bad[1]), error_field=bad[0], **where)
