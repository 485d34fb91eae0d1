"""Fuzz the readers (hypothesis): JSONL, JSON-array and Parquet inputs from random bytes, random
JSON values and random encodings.

    .venv/bin/python -m pytest -q tests/test_reader_fuzz.py             # bounded: a few seconds
    .venv/bin/python -m pytest -q -m fuzz tests/test_reader_fuzz.py     # the deeper profile

Checked: a reader never raises anything but the documented clear error (InputError, of which
NoRowsError is one); every record ends as exactly one row or one reject (counts add up); good rows
come out unchanged, in order, and bad lines are rejects at their own line.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.io import InputError, iter_examples, read_examples
from pipelines.readers.examples import concat_results

FAST = settings(max_examples=25, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
DEEP = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

BOMS = {"utf-8": b"", "utf-8-sig": b"", "utf-16": b"", "utf-16-be": b"\xfe\xff", "utf-32": b"", "utf-32-le": b"\xff\xfe\x00\x00"}
text = st.text(max_size=20)
nonblank = st.text(min_size=1, max_size=20).filter(lambda s: s.strip())
json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=6,
)
good_row = st.fixed_dictionaries({"instruction": nonblank, "response": nonblank},
                                 optional={"context": text, "extra": json_value})


def _not_a_row(line: str) -> bool:
    try:
        return not isinstance(json.loads(line), dict)
    except ValueError:
        return True


# A bad line: random text (never a JSON object), a NaN literal, or a row missing its response.
bad_line = (st.text(max_size=30).filter(lambda s: s.strip() and "\n" not in s and _not_a_row(s))
            | st.just('{"instruction": "q", "response": "r", "x": NaN}')
            | nonblank.map(lambda s: json.dumps({"instruction": s})))
items = st.lists(st.one_of(good_row.map(lambda r: ("good", r)), bad_line.map(lambda s: ("bad", s))), min_size=1, max_size=12)


def _read(path: Path, chunk_rows: int):
    """read_examples and iter_examples agree; only InputError may escape."""
    try:
        whole = read_examples(path)
    except InputError as e:
        with pytest.raises(InputError) as again:
            concat_results(list(iter_examples(path, chunk_rows=chunk_rows)))
        assert type(again.value) is type(e)
        return None
    parts = concat_results(list(iter_examples(path, chunk_rows=chunk_rows)))
    assert parts.table.equals(whole.table) and parts.rejects == whole.rejects
    c = whole.counts
    assert c["records"] == c["examples"] + c["rejects"] == whole.table.height + len(whole.rejects)
    return whole


def _expected(row: dict) -> tuple:
    extra = row.get("extra")
    meta = {"extra": extra} if extra is not None else {}
    return row["instruction"].strip(), (row.get("context") or "").strip(), row["response"].strip(), meta


def _got(table: pl.DataFrame) -> list[tuple]:
    return [(r["instruction"], r["context"], r["response"], json.loads(r["meta"])) for r in table.iter_rows(named=True)]


def check_random_bytes(data: bytes, suffix: str, bom: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"x{suffix}"
        path.write_bytes(bom + data)
        _read(path, chunk_rows=2)


def check_jsonl(rows: list, encoding: str, chunk_rows: int) -> None:
    lines = [json.dumps(v, ensure_ascii=False) if kind == "good" else v for kind, v in rows]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "x.jsonl"
        path.write_bytes(BOMS[encoding] + ("\n".join(lines) + "\n").encode(encoding))
        res = _read(path, chunk_rows)
        good = [v for kind, v in rows if kind == "good"]
        if res is None:
            assert not good  # only a file without a usable row may fail
            return
        assert res.counts["records"] == len(rows)
        assert _got(res.table) == [_expected(r) for r in good]
        assert [r["line"] for r in res.rejects] == [i for i, (kind, _) in enumerate(rows, 1) if kind == "bad"]


def check_json_array(rows: list, encoding: str) -> None:
    good = [r for kind, r in rows if kind == "good"]
    elements = [json.dumps(v, ensure_ascii=False) if kind == "good" else "NaN" if v.endswith("NaN}") else json.dumps(v)
                for kind, v in rows]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "x.json"
        path.write_bytes(BOMS[encoding] + ("[\n" + ",\n".join(elements) + "\n]").encode(encoding))
        res = _read(path, chunk_rows=3)
        if res is None:
            assert not good
            return
        assert res.counts["records"] == len(rows) and _got(res.table) == [_expected(r) for r in good]


def check_parquet(rows: list) -> None:
    table = pl.DataFrame({"instruction": [r["instruction"] if k == "good" else "q" for k, r in rows],
                          "response": [r["response"] if k == "good" else None for k, r in rows],
                          "context": [r.get("context") if k == "good" else None for k, r in rows]},
                         schema={"instruction": pl.Utf8, "response": pl.Utf8, "context": pl.Utf8})
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "x.parquet"
        table.write_parquet(path)
        res = _read(path, chunk_rows=2)
        good = [r for k, r in rows if k == "good"]
        if res is None:
            assert not good
            return
        assert res.counts["records"] == len(rows)
        assert _got(res.table) == [_expected({**r, "extra": None}) for r in good]
        assert [r["row"] for r in res.rejects] == [i for i, (k, _) in enumerate(rows, 1) if k == "bad"]


raw_bytes = (st.binary(max_size=200), st.sampled_from([".jsonl", ".json", ".parquet"]),
             st.sampled_from([b"", b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff", b"\xff\xfe\x00\x00", b"PAR1"]))
jsonl_args = (items, st.sampled_from(sorted(BOMS)), st.integers(1, 5))
array_args = (items, st.sampled_from(sorted(BOMS)))


@FAST
@given(*raw_bytes)
def test_random_bytes_give_rows_rejects_or_a_clear_error(data, suffix, bom):
    check_random_bytes(data, suffix, bom)


@FAST
@given(*jsonl_args)
def test_jsonl_rows_come_out_unchanged_and_bad_lines_are_rejects(rows, encoding, chunk_rows):
    check_jsonl(rows, encoding, chunk_rows)


@FAST
@given(*array_args)
def test_json_array_rows_come_out_unchanged(rows, encoding):
    check_json_array(rows, encoding)


@FAST
@given(items)
def test_parquet_rows_come_out_unchanged(rows):
    check_parquet(rows)


@pytest.mark.fuzz
@DEEP
@given(*raw_bytes)
def test_deep_random_bytes(data, suffix, bom):
    check_random_bytes(data, suffix, bom)


@pytest.mark.fuzz
@DEEP
@given(*jsonl_args)
def test_deep_jsonl(rows, encoding, chunk_rows):
    check_jsonl(rows, encoding, chunk_rows)


@pytest.mark.fuzz
@DEEP
@given(*array_args)
def test_deep_json_array(rows, encoding):
    check_json_array(rows, encoding)


@pytest.mark.fuzz
@DEEP
@given(items)
def test_deep_parquet(rows):
    check_parquet(rows)
