"""An example table in an exchange format :mod:`pipelines.io` reads back, written atomically.

    write_examples(table, "rows.jsonl", fmt="alpaca")    # .jsonl, .json (array), .parquet, or a folder (HF)

(The pipeline's own shards use :mod:`pipelines.shards`; the export uses :mod:`pipelines.export`.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl

from pipelines.readers.formats import FORMATS
from pipelines.schema import CORE_COLUMNS, user_content
from pipelines.shards import atomic_write_jsonl, atomic_write_parquet, atomic_write_text
from pipelines.writers.hf_folder import atomic_save_to_disk
from pipelines.writers.jsonl import write_rejects

__all__ = ["to_records", "write_examples", "write_rejects"]


def to_records(table: pl.DataFrame, fmt: str) -> list[dict[str, Any]]:
    """Example rows as records of ``fmt`` (one of pipelines.readers.formats.FORMATS).

    Other formats carry the meta keys as extra fields (read back into meta), so alpaca and qa
    round-trip whole; ``messages`` and ``prompt_completion`` fold the context into the user turn
    (schema.user_content), so reading them back gives context "" and a different id.
    """
    out = []
    for row in table.select(CORE_COLUMNS).iter_rows(named=True):
        i, c, r = row["instruction"], row["context"], row["response"]
        meta = json.loads(row["meta"] or "{}")
        if fmt == "example":
            out.append({**row, "meta": meta})
            continue
        if fmt == "alpaca":
            rec = {"instruction": i, "input": c, "output": r}
        elif fmt == "qa":
            rec = {"question": i, "context": c, "answer": r}
        elif fmt == "messages":
            rec = {
                "messages": [
                    {"role": "user", "content": user_content(i, c)},
                    {"role": "assistant", "content": r},
                ]
            }
        elif fmt == "prompt_completion":
            rec = {"prompt": user_content(i, c), "completion": r}
        else:
            raise ValueError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
        out.append({**{k: v for k, v in meta.items() if k not in rec}, **rec})
    return out


def write_examples(table: pl.DataFrame, path: Path | str, fmt: str = "example") -> Path:
    """Write an example table atomically as ``.jsonl``, ``.json`` (array), ``.parquet``, or a saved
    HF dataset (any other path: a folder)."""
    path = Path(path)
    if path.suffix == ".parquet":
        atomic_write_parquet(
            pl.DataFrame(to_records(table, fmt)) if fmt != "example" else table.select(CORE_COLUMNS), path
        )
    elif path.suffix == ".jsonl":
        atomic_write_jsonl(to_records(table, fmt), path)
    elif path.suffix == ".json":
        atomic_write_text(path, json.dumps(to_records(table, fmt), ensure_ascii=False, indent=1) + "\n")
    else:
        from datasets import Dataset

        records = to_records(table, fmt) if fmt != "example" else table.select(CORE_COLUMNS).to_dicts()
        atomic_save_to_disk(Dataset.from_list(records), path)
    return path
