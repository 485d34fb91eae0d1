"""Moved to :mod:`pipelines.writers.hf_folder`; this name stays importable for existing callers."""

from pipelines.writers.hf_folder import (  # noqa: F401
    BATCH_ROWS,
    MAX_SHARD_BYTES,
    atomic_folder,
    atomic_save_to_disk,
    content_fingerprint,
    save_parquet_shards_to_disk,
)
