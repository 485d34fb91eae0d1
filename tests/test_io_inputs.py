"""Issue 23, inputs: every bad input is one reject of its line/row, or one clear error.

    .venv/bin/python -m pytest -q tests/test_io_inputs.py
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from test_io import GOOD, _counts_add_up, _jsonl

from pipelines.io import InputError, NoRowsError, iter_examples, read_examples, read_passages
from pipelines.readers.examples import concat_results


def test_deeply_nested_json_is_a_reject_of_its_line_not_a_lost_file(tmp_path):
    deep = '{"instruction": "deep", "response": "x", "extra": ' + "[" * 5000 + "]" * 5000 + "}"
    path = _jsonl(tmp_path / "deep.jsonl", [json.dumps(GOOD), deep, json.dumps(GOOD)])
    for res in (read_examples(path), concat_results(list(iter_examples(path, chunk_rows=1)))):
        _counts_add_up(res)
        assert res.table.height == 2 and [r["line"] for r in res.rejects] == [2]
        assert res.rejects[0]["reason"].startswith("nesting too deep")
    # In a JSON array the reader steps past the element and reads the next one.
    arr = tmp_path / "deep.json"
    arr.write_text("[" + ",\n".join([json.dumps(GOOD), deep, json.dumps({**GOOD, "response": "after"})]) + "]")
    res = read_examples(arr)
    assert res.table["response"].to_list() == ["Blue.", "after"] and res.rejects[0]["line"] == 2
    assert "nesting too deep" in res.rejects[0]["reason"]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32", "utf-32-be", "utf-8-sig"])
def test_utf16_utf32_and_utf8_files_with_a_bom_are_read(tmp_path, encoding):
    bom = {"utf-16-be": b"\xfe\xff", "utf-32-be": b"\x00\x00\xfe\xff"}.get(encoding, b"")
    rows = [{"instruction": f"Caf\u00e9 {i} \u2603?", "response": f"\u00c0 {i} \U0001f600"} for i in range(3)]
    lines = "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\r\n"
    expected = read_examples(_jsonl(tmp_path / "utf8.jsonl", [lines.strip()])).table.drop("source")
    (tmp_path / "x.jsonl").write_bytes(bom + lines.encode(encoding))
    (tmp_path / "x.json").write_bytes(bom + json.dumps(rows, ensure_ascii=False, indent=1).encode(encoding))
    for name in ("x.jsonl", "x.json"):
        res = read_examples(tmp_path / name)
        assert res.rejects == [] and res.table.drop("source").equals(expected), name
    passages = tmp_path / "p.txt"
    passages.write_bytes(bom + "first \u00e9\nsecond\n".encode(encoding))
    assert read_passages(passages).table["text"].to_list() == ["first \u00e9", "second"]


def test_a_bad_code_unit_in_a_utf16_file_rejects_its_line_only(tmp_path):
    good = json.dumps(GOOD).encode("utf-16-le")
    bad = '{"instruction": "x'.encode("utf-16-le") + b"\x00\xd8" + '", "response": "y"}'.encode("utf-16-le")
    path = tmp_path / "u16.jsonl"
    path.write_bytes(b"\xff\xfe" + b"\n\x00".join([good, bad, good]) + b"\n\x00")
    res = read_examples(path)
    assert res.table.height == 2 and res.rejects[0]["line"] == 2
    assert res.rejects[0]["reason"].startswith("not valid UTF-16")
    with pytest.raises(InputError, match="u16.jsonl:2: not valid UTF-16"):
        read_examples(path, strict_encoding=True)


def test_a_file_whose_every_row_is_rejected_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "data.parquet"
    pl.DataFrame({"instruction": ["a", "b"], "response": [1, 2]}).write_parquet(path)
    with pytest.raises(NoRowsError) as err:
        read_examples(path)
    assert str(err.value) == "data.parquet: 0 of 2 rows read: response must be a string, got int (2)".replace(
        "data.parquet", str(path))
    assert isinstance(err.value, ValueError) and len(err.value.rejects) == 2
    with pytest.raises(NoRowsError, match="0 of 2 rows read"):
        list(iter_examples(path))
    from pipelines.io import main

    with pytest.raises(SystemExit) as exit_:
        main([str(path), "--rejects", str(tmp_path / "rejects.jsonl")])
    assert exit_.value.code != 0 and str(exit_.value.code).startswith("error: ") and "0 of 2 rows read" in str(exit_.value.code)
    assert len((tmp_path / "rejects.jsonl").read_text().splitlines()) == 2  # rejects still written first


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_literals_are_rejects_not_meta(tmp_path, literal):
    line = '{"instruction": "q", "response": "r", "score": ' + literal + "}"
    path = _jsonl(tmp_path / "nan.jsonl", [json.dumps({**GOOD, "note": "NaN"}), line])
    res = read_examples(path)
    assert res.table.height == 1 and json.loads(res.table["meta"][0]) == {"note": "NaN"}  # a string is fine
    (rej,) = res.rejects
    assert rej["line"] == 2 and rej["reason"].startswith(f"{literal} is not valid JSON")
    arr = tmp_path / "nan.json"
    arr.write_text(f"[{json.dumps(GOOD)}, {line}]")
    assert read_examples(arr).rejects[0]["reason"].startswith(f"{literal} is not valid JSON")
    # A Parquet float column that is not finite is data, not a JSON literal: null in meta.
    pl.DataFrame({**{k: [v] for k, v in GOOD.items()}, "score": [float("nan")]}).write_parquet(tmp_path / "n.parquet")
    assert json.loads(read_examples(tmp_path / "n.parquet").table["meta"][0]) == {"score": None}


def test_a_line_longer_than_max_line_bytes_is_a_reject_read_in_bounded_memory(tmp_path):
    import tracemalloc

    path = tmp_path / "long.jsonl"
    with path.open("w") as f:
        f.write(json.dumps(GOOD) + "\n")
        f.write('{"instruction": "' + "x" * (32 << 20) + '", "response": "r"}\n')
        f.write(json.dumps(GOOD) + "\n")
    tracemalloc.start()
    try:
        res = read_examples(path, max_line_bytes=1 << 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert res.table.height == 2 and [r["line"] for r in res.rejects] == [2]
    assert res.rejects[0]["reason"] == f"line longer than max_line_bytes ({1 << 20} bytes)"
    assert peak < 4 << 20  # the 32 MB line was never held whole: a few times the 1 MB cap
    assert read_examples(path).table.height == 3  # the default (64 MB) lets it through
    from pipelines.readers.records import MAX_LINE_BYTES

    assert MAX_LINE_BYTES == 64 << 20


def test_check_input_validates_the_first_rows_without_reading_the_rest(tmp_path):
    from pipelines.io import check_input

    folder = tmp_path / "pq"
    folder.mkdir()
    pl.DataFrame({"instruction": [f"q{i}" for i in range(300)], "response": ["r"] * 300}).write_parquet(folder / "a.parquet")
    (folder / "b.parquet").write_bytes(b"PAR1 not parquet at all")
    with pytest.raises(InputError, match="not a readable Parquet file"):
        read_examples(folder)  # the whole read reaches the broken second file
    res = check_input(folder, max_rows=10)
    assert res.counts["records"] == 10 and res.table.height == 10
    path = _jsonl(tmp_path / "in.jsonl", [json.dumps({"instruction": "x"})] * 5 + [json.dumps(GOOD)] * 5)
    with pytest.raises(NoRowsError, match="0 of 3 rows read: response missing required field"):
        check_input(path, max_rows=3)
    assert check_input(path, max_rows=100).table.height == 5
    with pytest.raises(InputError, match="not found"):
        check_input(tmp_path / "missing.jsonl")
    txt = tmp_path / "p.txt"
    txt.write_text("one\ntwo\nthree\n")
    assert check_input(txt, max_rows=2, passages=True).table["text"].to_list() == ["one", "two"]


def test_source_and_reject_file_are_relative_never_absolute(tmp_path, monkeypatch):
    (tmp_path / "work" / "data").mkdir(parents=True)
    inside = _jsonl(tmp_path / "work" / "data" / "in.jsonl", [json.dumps(GOOD), "{oops"])
    outside = _jsonl(tmp_path / "elsewhere.jsonl", [json.dumps(GOOD), "{oops"])
    monkeypatch.chdir(tmp_path / "work")
    for given in (inside, "data/in.jsonl", "./data/../data/in.jsonl"):
        res = read_examples(given)
        assert res.table["source"].to_list() == ["data/in.jsonl"] and res.rejects[0]["file"] == "data/in.jsonl"
        part = next(iter_examples(given))
        assert part.table["source"].to_list() == ["data/in.jsonl"] and part.rejects[0]["file"] == "data/in.jsonl"
    res = read_examples(outside)
    assert res.table["source"].to_list() == ["elsewhere.jsonl"] and res.rejects[0]["file"] == "elsewhere.jsonl"
    assert read_passages(_jsonl(tmp_path / "p.jsonl", ['{"text": "a passage"}'])).table["source"][0] == "p.jsonl"


def test_readers_and_writers_import_no_cycle_and_no_private_names():
    """Issue 19: io -> export -> io and stream_io -> io's private names are gone for good."""
    import ast

    root = Path(__file__).resolve().parents[1]
    files = [*sorted((root / "pipelines" / "readers").glob("*.py")), *sorted((root / "pipelines" / "writers").glob("*.py")),
             *(root / "pipelines" / f"{m}.py" for m in ("io", "stream_io", "export", "export_stream"))]
    graph = {}
    for f in files:
        name = ".".join(f.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
        deps = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pipelines"):
                deps.add(node.module)
                assert not [a.name for a in node.names if a.name.startswith("_")], (name, node.module)
        graph[name] = deps

    def reach(start, seen):
        for d in graph.get(start, ()):
            if d not in seen:
                seen.add(d)
                reach(d, seen)
        return seen

    assert [m for m in graph if m in reach(m, set())] == []
