"""Examples in chunks, for inputs bigger than memory: moved to :mod:`pipelines.readers.examples`
(``iter_examples``) and :mod:`pipelines.writers.parquet_shards` (``ShardWriter``); these names stay
importable from here.

    from pipelines.stream_io import iter_examples
    for part in iter_examples("big.jsonl", chunk_rows=50_000):
        part.table, part.rejects, part.counts   # one ReadResult per chunk, in file order

Same formats, same rejects rules and same reject fields as ``read_examples`` (which is this
reader run to the end): the chunks concatenated give its table and rejects. JSON lines and
Parquet are streamed (memory holds one line or batch and one chunk, not the file); a JSON
document is parsed whole.
"""

from pipelines.readers.examples import BLOCK_BYTES, iter_examples
from pipelines.writers.parquet_shards import ShardWriter

__all__ = ["BLOCK_BYTES", "ShardWriter", "iter_examples"]
