"""Read instruction data from files into the example table, with every bad row accounted for.

    from pipelines.io import read_examples, check_input
    from pipelines.export import write_rejects          # every writer lives in pipelines.writers
    res = read_examples("data/target.jsonl")            # format detected from the fields
    res.table, res.rejects, res.counts                   # counts: records = examples + rejects
    write_rejects(res.rejects, "run/rejects-target.jsonl")

    python -m pipelines.io PATH [--format alpaca] [--out table.parquet] [--rejects rejects.jsonl]
        [--strict-encoding] [--max-line-bytes N]

This module is the readers' front door; each container has its own file under
:mod:`pipelines.readers` (the streamed reader :func:`iter_examples` is the one read path:
:func:`read_examples` runs it to the end; :func:`check_input` validates the first rows only).

Containers (from the path): ``.jsonl``/``.ndjson`` (one JSON object a line), ``.json`` (an array
of objects, or JSON lines), ``.parquet`` (a file, or a folder of ``*.parquet``), a folder written
by ``datasets.Dataset.save_to_disk``, ``.txt`` (one passage a line; passages only).

Row formats (``fmt``; ``auto`` picks one per file from the fields of its first records):

| fmt               | fields                                   | -> instruction / context / response |
|-------------------|------------------------------------------|-------------------------------------|
| example           | instruction, response [, context, source, meta] | as named (this project's own rows) |
| alpaca            | instruction, output [, input]            | instruction / input / output        |
| messages          | messages: [{role, content}, ...]          | last user turn / "" / final assistant turn |
| prompt_completion | prompt, completion (strings or messages)  | prompt / "" / completion            |
| qa                | question, answer [, context]             | question / context / answer         |

Fields a format does not use go into ``meta`` (e.g. T0's ``task_type``), so nothing is lost.
Plain passages for the generators (``.txt``, or records with a ``text`` field) are read with
:func:`read_passages` instead.

Bad input. Problems that make the whole file unusable raise :class:`InputError` (a
``ValueError``) whose message names the file, the line and, where one is to blame, the field:
a missing file, an empty file, a ``.json`` file that does not parse, a file where no line
parses or no format fits, and a file whose every row is rejected (:class:`NoRowsError`:
``data.parquet: 0 of 2 rows read: response must be a string, got int (2)``; it carries the
rejects, which the command line writes before it exits non-zero). Problems with one row -- a required field missing, empty or of the
wrong type, one malformed line in a JSONL file, bytes that are not UTF-8 in one line (JSONL,
``.txt``), one array element (``.json``) or one string cell (Parquet, HF), a JSON value with
the literals ``NaN``/``Infinity``/``-Infinity`` (not JSON: strict readers downstream refuse
them, so they never reach ``meta``), JSON nested deeper than the parser allows (~1000 levels),
a line longer than ``max_line_bytes`` (default 64 MB; read past without holding it) -- do not
stop the read: the row goes to ``rejects`` as ``{file, line, record, row, byte_offset, field, reason,
raw}`` and is counted; every other row is read. A malformed JSONL line's reason carries the JSON
parser's message and column. ``line`` is the 1-based line where the record starts (None for
Parquet and HF datasets); ``record`` is its 1-based position in what was read, ``row`` its
position in ``file`` (they differ in a folder of Parquet files, where ``file`` is the one file);
``byte_offset`` is where a byte that is not UTF-8 sits in the file (None for other reasons).
A float cell of Parquet/HF that is not finite and lands in ``meta`` is stored there as null.
Encoding: UTF-8, or UTF-16/UTF-32 with a byte-order mark (a UTF-8 one is skipped too).
``file`` and the ``source`` column hold the path relative to the working directory, or the
file's name when it lies outside it: never an absolute path.
``strict_encoding=True`` (``--strict-encoding``; ``io.strict_encoding`` in a run) makes such a
byte fatal for the whole file instead, naming its line and byte offset.
"""

from __future__ import annotations

import argparse
import json

from pipelines.readers.containers import iter_records
from pipelines.readers.examples import check_input, convert_records, iter_examples, read_examples
from pipelines.readers.formats import FORMATS, detect_format, to_example
from pipelines.readers.passages import read_passages
from pipelines.readers.records import (
    MAX_LINE_BYTES,
    InputError,
    NoRowsError,
    ReadResult,
    Record,
    RowError,
    display_path,
)
from pipelines.writers.examples import write_examples, write_rejects

__all__ = [
    "FORMATS", "MAX_LINE_BYTES", "InputError", "NoRowsError", "ReadResult", "Record", "RowError",
    "check_input", "convert_records", "detect_format", "display_path", "iter_examples", "iter_records",
    "read_examples", "read_passages", "to_example", "main",
]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Read a dataset file into the example schema and report counts.")
    ap.add_argument("path", help="JSONL, JSON, Parquet, or a saved HF dataset folder")
    ap.add_argument(
        "--format", default="auto", choices=("auto", *FORMATS), help="row format (default: detect)"
    )
    ap.add_argument("--split", default=None, help="split of a saved DatasetDict")
    ap.add_argument(
        "--out",
        default=None,
        help="write the examples here (.parquet, .jsonl, .json, or a folder: a saved HF dataset)",
    )
    ap.add_argument("--rejects", default=None, help="write the rejects here (JSONL)")
    ap.add_argument(
        "--strict-encoding",
        action="store_true",
        help="stop at the first byte that is not UTF-8 (default: reject that line, read the rest)",
    )
    ap.add_argument("--max-line-bytes", type=int, default=MAX_LINE_BYTES,
                    help=f"a longer JSON line is a reject (default {MAX_LINE_BYTES})")
    args = ap.parse_args(argv)
    try:
        res = read_examples(args.path, args.format, split=args.split, strict_encoding=args.strict_encoding,
                            max_line_bytes=args.max_line_bytes)
    except NoRowsError as e:
        if args.rejects:
            write_rejects(e.rejects, args.rejects)
        raise SystemExit(f"error: {e}") from None
    except InputError as e:
        raise SystemExit(f"error: {e}") from None
    if args.out:
        write_examples(res.table, args.out)
    if args.rejects:
        write_rejects(res.rejects, args.rejects)
    print(json.dumps({"format": res.fmt, **res.counts}, indent=1))


if __name__ == "__main__":
    main()
