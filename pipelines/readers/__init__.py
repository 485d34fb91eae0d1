"""Readers, one container format a file; the public entry points are in :mod:`pipelines.io`.

    records.py     Record, ReadResult, the errors, the reject record, display paths
    text.py        bytes -> text lines: byte-order marks (UTF-8/16/32), bad bytes, max_line_bytes
    json_values.py strict JSON values: no NaN/Infinity, too-deep nesting is a reject
    jsonl.py       JSON lines (.jsonl, .ndjson), streamed line by line
    json_doc.py    a .json document: an array of records, {"data": [...]}, or JSON lines
    arrow.py       Arrow rows whose string cells may hold bytes that are not UTF-8
    parquet.py     a Parquet file or folder, streamed a record batch at a time
    hf.py          a folder written by datasets' save_to_disk
    containers.py  path -> records: picks the reader
    formats.py     row formats (example, alpaca, messages, prompt_completion, qa): record -> example
    examples.py    iter_examples / read_examples / check_input: records -> example tables
    passages.py    read_passages: plain passages for the generators
"""
