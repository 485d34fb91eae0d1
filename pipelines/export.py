"""Export a selected example table: Parquet shards, JSONL, an HF dataset on disk, a dataset card.

    from pipelines.export import export_dataset, push_to_hub
    paths = export_dataset(table, "runs/x/dataset", card_info={"config": cfg, "stages": records})
    push_to_hub(paths["dir"], "me/my-dataset")      # token from HF_TOKEN; private by default

Layout of ``out_dir``::

    parquet/part-00000.parquet ...  the rows, shard_rows per shard (pipelines.shards.read_shards)
    data.jsonl                      the same rows, one JSON object per line (keys sorted)
    hf/                             datasets.Dataset.save_to_disk (datasets.load_from_disk)
    test/{parquet,data.jsonl,hf}    with ``test_fraction`` > 0: the held-out split in the same forms
                                    (the top-level files are then the train split)
    README.md                       the dataset card's prose, no YAML header

Every row carries the table's columns plus ``messages`` (TRL chat format). The same table gives
byte-identical files: no timestamps, Parquet without statistics, the HF fingerprint a hash of
the content -- a resumed run compares equal to an uninterrupted one. Files are written to a
temp name and renamed, so a killed export never leaves a half-written file.

One data path: :func:`export_dataset` is :func:`pipelines.export_stream.export_rows` run over
one in-memory table, the same code :func:`~pipelines.export_stream.export_selected` runs batch by
batch. Each output format has its own file under :mod:`pipelines.writers`; this module keeps
their public names importable from here: :func:`write_examples`, :func:`to_records` (an example
table for other tools, in any format :mod:`pipelines.io` reads), :func:`write_rejects`,
:func:`push_to_hub`, :func:`dataset_card_text`.

The card holds no YAML because ``datasets``' ``push_to_hub`` writes the metadata header
(features, splits, data files) itself; :func:`push_to_hub` puts the prose under that header.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl

from pipelines.export_stream import export_rows
from pipelines.redact import SECRET_KEY
from pipelines.writers.card import CARD_KEYS, dataset_card_text, usage_card
from pipelines.writers.examples import to_records, write_examples
from pipelines.writers.hf_folder import plain_type, to_hf_dataset
from pipelines.writers.hub import push_to_hub
from pipelines.writers.jsonl import json_lines, write_rejects
from pipelines.writers.rows import MESSAGES_DTYPE, SLICE_ROWS, export_table, split_train_test
from pipelines.writers.split import SplitWriter

__all__ = [
    "CARD_KEYS", "MESSAGES_DTYPE", "SECRET_KEY", "SLICE_ROWS", "SplitWriter", "dataset_card_text",
    "export_dataset", "export_table", "json_lines", "plain_type", "push_to_hub", "split_train_test",
    "to_hf_dataset", "to_records", "usage_card", "write_examples", "write_rejects",
]


def export_dataset(
    table: pl.DataFrame,
    out_dir: str | Path,
    *,
    card_info: Mapping[str, Any],
    shard_rows: int = 5000,
    selected: pl.DataFrame | None = None,
    test_fraction: float = 0.0,
    seed: int = 0,
) -> dict[str, Path]:
    """Write Parquet shards, JSONL, the HF dataset and README.md into ``out_dir``.

    ``selected``: every row that entered selection, with ``keep`` -- the card then shows what the
    selection kept and dropped per source and task type, with kept-vs-dropped score histograms
    (``plots/<score>.png``).

    ``card_info`` (all optional): title, description, generators (list or dict), models (dict),
    config (dict, or TOML/YAML text), stages (stage records), fingerprint, scores (score column ->
    definition). Unknown keys are an error so a typo does not silently drop provenance.

    ``test_fraction`` > 0 holds out a seeded test split (:func:`split_train_test`) under ``test/``.
    Returns {"dir", "parquet", "jsonl", "hf", "card"} (+ "test_parquet", "test_jsonl", "test_hf")
    -> paths.
    """
    return export_rows([table], table, table.clear(), out_dir, card_info=card_info, selected=selected,
                       shard_rows=shard_rows, test_fraction=test_fraction, seed=seed)
