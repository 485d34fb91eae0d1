"""Writers, one output format a file; the export itself is :mod:`pipelines.export_stream`.

    rows.py            the rows as exported (+ messages) and the seeded train/test split
    parquet_shards.py  ShardWriter: numbered Parquet shards from rows that arrive in pieces
    jsonl.py           JSON lines: the export's data.jsonl (temp file + rename) and rejects files
    hf_folder.py       save_to_disk folders (atomic; streamed from Parquet shards)
    split.py           SplitWriter: one split as shards + JSONL + HF folder
    card.py            the dataset card's prose and its score plots
    examples.py        an example table in an exchange format pipelines.io reads back
    hub.py             push_to_hub: data, card and plots to a Hub dataset repo
"""
