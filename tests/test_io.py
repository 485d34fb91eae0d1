"""Readers: bad input (fatal errors name file/line/field, row problems become counted rejects)
and a round trip through every format on real files from ../shared/datasets."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from pipelines.export import write_examples, write_rejects
from pipelines.io import InputError, NoRowsError, read_examples, read_passages
from pipelines.schema import make_example, to_table, user_content
from pipelines.shards import read_rejects

GOOD = {"instruction": "Name a colour.", "response": "Blue."}


def _jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _counts_add_up(res) -> None:
    assert (
        res.counts["records"]
        == res.counts["examples"] + res.counts["rejects"]
        == res.table.height + len(res.rejects)
    )


# --- bad input -------------------------------------------------------------------------------


def test_malformed_jsonl_line_is_a_reject_naming_file_and_line(tmp_path):
    path = _jsonl(
        tmp_path / "in.jsonl", [json.dumps(GOOD), '{"instruction": "Hi", "response": ', json.dumps(GOOD)]
    )
    res = read_examples(path)
    assert res.table.height == 2
    _counts_add_up(res)
    (rej,) = res.rejects
    assert rej["file"] == path.name and rej["line"] == 2 and rej["record"] == 2
    assert rej["reason"].startswith("malformed JSON line") and "column" in rej["reason"]
    # The rejects file carries the same facts.
    write_rejects(res.rejects, tmp_path / "rejects" / "rejects-00000.jsonl")
    (on_disk,) = read_rejects(tmp_path / "rejects")
    assert on_disk["line"] == 2 and on_disk["file"] == path.name and '"response": ' in on_disk["raw"]


def test_jsonl_where_no_line_parses_is_fatal_with_file_and_line(tmp_path):
    path = _jsonl(tmp_path / "bad.jsonl", ["", "not json at all", "{oops"])
    with pytest.raises(InputError, match=r"bad\.jsonl:2: no record parses.*malformed JSON line"):
        read_examples(path)


def test_missing_required_field_and_wrong_type_are_rejects_naming_the_field(tmp_path):
    rows = [
        GOOD,
        {"instruction": "No answer here."},
        {"instruction": 7, "response": "x"},
        {**GOOD, "response": "  "},
    ]
    path = _jsonl(tmp_path / "in.jsonl", [json.dumps(r) for r in rows])
    res = read_examples(path)
    _counts_add_up(res)
    assert res.table.height == 1
    got = [(r["line"], r["field"], r["reason"]) for r in res.rejects]
    assert got == [
        (2, "response", "missing required field"),
        (3, "instruction", "must be a string, got int"),
        (4, "response", "empty"),
    ]
    assert res.counts["rejects_by_reason"]["response: missing required field"] == 1


def _jsonl_with_bad_byte(path: Path, n: int = 24, bad_line: int = 4) -> tuple[Path, int]:
    """``n`` JSONL lines, line ``bad_line`` holding a Latin-1 byte; (path, that byte's file offset)."""
    lines = [json.dumps({"instruction": f"Question {i}, caf\u00e9?", "response": f"Answer {i}."}).encode() for i in range(n)]
    lines[bad_line - 1] = '{"instruction": "caf\u00e9 au lait?", "response": "x"}'.encode("latin-1")
    path.write_bytes(b"\n".join(lines) + b"\n")
    offset = sum(len(line) + 1 for line in lines[: bad_line - 1]) + lines[bad_line - 1].index(b"\xe9")
    return path, offset


def test_a_non_utf8_line_costs_that_line_only(tmp_path, capsys):
    path, offset = _jsonl_with_bad_byte(tmp_path / "latin1.jsonl")
    res = read_examples(path)
    assert res.table.height == 23 and res.counts["rejects"] == 1
    _counts_add_up(res)
    (rej,) = res.rejects
    assert (rej["file"], rej["line"], rej["record"], rej["byte_offset"]) == (path.name, 4, 4, offset)
    assert rej["reason"].startswith("not valid UTF-8 (byte 0xe9)") and "caf" in rej["raw"]
    assert "Question 3," not in res.table["instruction"].to_list()  # line 4 is the bad one
    assert {"Question 2, caf\u00e9?", "Question 4, caf\u00e9?"} <= set(res.table["instruction"].to_list())
    # The command line reads the other 23 and writes the reject with its byte offset.
    from pipelines.io import main

    main([str(path), "--rejects", str(tmp_path / "rejects.jsonl")])
    assert json.loads(capsys.readouterr().out)["examples"] == 23
    (on_disk,) = [json.loads(x) for x in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert on_disk["byte_offset"] == offset and on_disk["line"] == 4


def test_strict_encoding_fails_fast_naming_file_line_and_offset(tmp_path):
    path, offset = _jsonl_with_bad_byte(tmp_path / "latin1.jsonl", n=3, bad_line=2)
    with pytest.raises(InputError) as err:
        read_examples(path, strict_encoding=True)
    assert str(err.value).startswith(f"{path}:2:") and f"not valid UTF-8 (byte 0xe9 at byte offset {offset})" in str(err.value)
    assert err.value.line == 2
    from pipelines.io import main

    with pytest.raises(SystemExit, match="not valid UTF-8"):
        main([str(path), "--strict-encoding"])


def test_non_utf8_bytes_in_a_json_array_parquet_hf_and_txt_reject_their_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    arr = tmp_path / "arr.json"
    arr.write_bytes(b'\xef\xbb\xbf[{"instruction": "a", "response": "b"},\n {"instruction": "x\xff", "response": "c"}]')
    res = read_examples(arr)
    assert res.table.height == 1 and res.rejects[0]["line"] == 2
    assert res.rejects[0]["byte_offset"] == arr.read_bytes().index(b"\xff")
    # Arrow stores strings unchecked: a cell that is not UTF-8 rejects its row, naming the column.
    cells = pa.array([b"fine", b"bad\xff", b"also fine"], type=pa.binary()).view(pa.string())
    table = pa.table({"instruction": cells, "response": pa.array(["r1", "r2", "r3"])})
    folder = tmp_path / "pq"
    folder.mkdir()
    write_examples(to_table([make_example("first file", "ok")]), folder / "a.parquet")
    pq.write_table(table, folder / "b.parquet")
    res = read_examples(folder)
    assert res.table["instruction"].to_list() == ["first file", "fine", "also fine"]
    (rej,) = res.rejects
    assert (rej["file"], rej["row"], rej["record"], rej["field"]) == ("b.parquet", 2, 3, "instruction")
    with pytest.raises(InputError, match="b.parquet"):
        read_examples(folder, strict_encoding=True)
    from datasets import Dataset

    Dataset(table).save_to_disk(str(tmp_path / "hf"))
    res = read_examples(tmp_path / "hf")
    assert res.table.height == 2 and [(r["row"], r["field"]) for r in res.rejects] == [(2, "instruction")]
    with pytest.raises(InputError, match="row 2: not valid UTF-8"):
        read_examples(tmp_path / "hf", strict_encoding=True)
    txt = tmp_path / "p.txt"
    txt.write_bytes(b"first passage\nsecond \xfe passage\n\nthird passage\n")
    res = read_passages(txt)
    assert res.table["text"].to_list() == ["first passage", "third passage"]
    assert res.table["text_id"].to_list() == ["p.txt:1", "p.txt:3"]  # positions, as before
    assert res.rejects[0]["line"] == 2 and res.rejects[0]["byte_offset"] == 21


def test_bad_rows_in_json_array_parquet_and_hf_are_rejects_naming_the_field(tmp_path):
    """Row validation is the same whatever the container: file, row and field of each bad row."""
    from datasets import Dataset

    rows = {"instruction": ["a", None, "c"], "response": ["x", "y", ""]}
    pl.DataFrame(rows).write_parquet(tmp_path / "t.parquet")
    Dataset.from_dict(rows).save_to_disk(str(tmp_path / "hf"))
    (tmp_path / "t.json").write_text(json.dumps([{k: v[i] for k, v in rows.items()} for i in range(3)]))
    for path in (tmp_path / "t.parquet", tmp_path / "hf", tmp_path / "t.json"):
        res = read_examples(path)
        got = [(r["file"], r["row"], r["field"], r["reason"]) for r in res.rejects]
        assert got == [(path.name, 2, "instruction", "missing required field"), (path.name, 3, "response", "empty")]


@pytest.mark.parametrize("content", ["", "\n  \n"])
def test_empty_file_is_fatal(tmp_path, content):
    path = tmp_path / "empty.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match=r"empty\.jsonl: empty file"):
        read_examples(path)


def test_missing_file_and_malformed_json_array_are_fatal(tmp_path):
    with pytest.raises(InputError, match=r"nope\.json: file not found"):
        read_examples(tmp_path / "nope.json")
    path = tmp_path / "broken.json"
    path.write_text(
        '[\n {"instruction": "a", "output": "b"},\n {"instruction": "c" "output": "d"}\n]\n', encoding="utf-8"
    )
    with pytest.raises(InputError, match=r"broken\.json:3: malformed JSON: Expecting ',' delimiter"):
        read_examples(path)


def test_undecidable_format_names_the_fields(tmp_path):
    path = _jsonl(tmp_path / "odd.jsonl", [json.dumps({"q": "a", "a": "b"})])
    with pytest.raises(
        InputError, match=r"odd\.jsonl:1: cannot tell the format from the fields \['a', 'q'\]"
    ):
        read_examples(path)


def test_json_string_with_line_separator_is_not_split(tmp_path):
    # U+2028 inside a JSON string is valid JSON; str.splitlines() would cut the record in two.
    path = _jsonl(
        tmp_path / "ls.jsonl",
        [json.dumps({"instruction": "a\u2028b\x0cc", "response": "ok"}, ensure_ascii=False)],
    )
    res = read_examples(path)
    assert res.rejects == [] and res.table["instruction"][0] == "a\u2028b\x0cc"


# --- formats ---------------------------------------------------------------------------------


def test_auto_detection_and_override(tmp_path):
    cases = {
        "alpaca": {"instruction": "i", "input": "c", "output": "r"},
        "example": {"instruction": "i", "context": "c", "response": "r"},
        "qa": {"question": "i", "context": "c", "answer": "r"},
        "prompt_completion": {"prompt": "i", "completion": "r"},
        "messages": {"messages": [{"role": "user", "content": "i"}, {"role": "assistant", "content": "r"}]},
    }
    for fmt, rec in cases.items():
        res = read_examples(_jsonl(tmp_path / f"{fmt}.jsonl", [json.dumps(rec)]))
        assert res.fmt == fmt and res.table["instruction"][0] == "i" and res.table["response"][0] == "r"
    # An explicit format wins over detection: alpaca rows read as qa are all rejected, by field,
    # and a file with no usable row is an error that still carries its rejects.
    with pytest.raises(NoRowsError, match=r"alpaca\.jsonl: 0 of 1 rows read: question missing required field \(1\)") as e:
        read_examples(tmp_path / "alpaca.jsonl", fmt="qa")
    assert e.value.rejects[0]["field"] == "question"


def test_messages_keep_system_and_history_and_reject_unanswered(tmp_path):
    conv = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
    ]
    trl = {
        "prompt": [{"role": "user", "content": "2+2?"}],
        "completion": [{"role": "assistant", "content": "4"}],
    }
    path = _jsonl(tmp_path / "m.jsonl", [json.dumps({"messages": conv}), json.dumps({"messages": conv[:4]})])
    res = read_examples(path)
    row = res.table.row(0, named=True)
    meta = json.loads(row["meta"])
    assert (row["instruction"], row["response"]) == ("Capital of France?", "Paris.")
    assert meta["system"] == "Be brief." and [m["content"] for m in meta["history"]] == ["Hi", "Hello."]
    assert (
        res.rejects[0]["field"] == "messages"
        and "last message must be the assistant" in res.rejects[0]["reason"]
    )
    res = read_examples(_jsonl(tmp_path / "trl.jsonl", [json.dumps(trl)]))
    assert (res.fmt, res.table["instruction"][0], res.table["response"][0]) == (
        "prompt_completion",
        "2+2?",
        "4",
    )


def _same_rows(
    a: pl.DataFrame, b: pl.DataFrame, columns=("id", "instruction", "context", "response", "meta")
) -> None:
    assert a.height == b.height > 0
    assert a.select(columns).equals(b.select(columns))


def test_round_trip_alpaca(shared_datasets, tmp_path):
    res = read_examples(shared_datasets / "instruct_general" / "alpaca_en_demo.json")
    assert res.fmt == "alpaca" and res.counts == {**res.counts, "records": 999, "examples": 999, "rejects": 0}
    assert (res.table["context"] != "").sum() == 412  # the README's count of rows with an input
    for name in ("back.json", "back.jsonl"):
        back = read_examples(write_examples(res.table, tmp_path / name, fmt="alpaca"))
        assert back.fmt == "alpaca"
        _same_rows(res.table, back.table)


def test_round_trip_prompt_completion_t0_parts(shared_datasets, tmp_path):
    parts = sorted((shared_datasets / "instruct_general").glob("t0_selected_combined.part0*.jsonl"))
    assert len(parts) == 3
    results = [read_examples(p) for p in parts]
    for res in results:
        assert res.fmt == "prompt_completion"
        _counts_add_up(res)
        # Empty completions are rejected by name, never dropped silently.
        assert all(r["field"] == "completion" and r["reason"] == "empty" for r in res.rejects)
    table = pl.concat([r.table for r in results])
    assert table.height + sum(len(r.rejects) for r in results) == 6691
    assert {"task_type", "source_dataset", "template"} <= set(json.loads(table["meta"][0]))
    back = read_examples(write_examples(table, tmp_path / "pc.jsonl", fmt="prompt_completion"))
    _same_rows(table, back.table, ("id", "instruction", "context", "response", "meta"))


def test_round_trip_context_qa_through_every_container(shared_datasets, tmp_path):
    res = read_examples(shared_datasets / "context_qa" / "pubmedqa_flat.jsonl")
    assert res.fmt == "qa" and res.table.height == 1000 and not res.rejects
    table = res.table.head(50)
    assert (table["context"] != "").all()
    assert json.loads(table["meta"][0])["pmid"]  # unused fields kept in meta
    for name, fmt in (
        ("qa.jsonl", "qa"),
        ("ex.jsonl", "example"),
        ("ex.parquet", "example"),
        ("hf_ds", "example"),
        ("a.json", "alpaca"),
    ):
        back = read_examples(write_examples(table, tmp_path / name, fmt=fmt))
        _same_rows(table, back.table)
    # Native rows keep their own source; HF and Parquet read back the exact table.
    assert read_examples(tmp_path / "hf_ds").table.equals(table)
    assert read_examples(tmp_path / "ex.parquet").table.equals(table)
    # Chat forms fold the context into the user turn.
    for name, fmt in (("m.jsonl", "messages"), ("pc.parquet", "prompt_completion")):
        back = read_examples(write_examples(table, tmp_path / name, fmt=fmt)).table
        assert back["instruction"].to_list() == [
            user_content(i, c) for i, c in zip(table["instruction"], table["context"], strict=True)
        ]
        assert back["response"].to_list() == table["response"].to_list() and (back["context"] == "").all()


def test_read_passages_text_and_jsonl(shared_datasets, tmp_path):
    wiki = read_passages(shared_datasets / "domain_text" / "wiki_demo.txt")
    assert wiki.table.height == 30 and wiki.table["text_id"][0] == "wiki_demo.txt:1"
    c4 = read_passages(shared_datasets / "domain_text" / "c4_demo.jsonl")
    assert c4.table.height == 300 and not c4.rejects
    path = _jsonl(tmp_path / "p.jsonl", [json.dumps({"text": "A passage."}), json.dumps({"body": "x"}), "{"])
    res = read_passages(path)
    assert res.table.height == 1 and [(r["line"], r["field"]) for r in res.rejects] == [
        (2, "text"),
        (3, None),
    ]
    with pytest.raises(InputError, match="use read_passages"):
        read_examples(shared_datasets / "domain_text" / "c4_demo.jsonl")


def test_dataset_dict_splits_and_wrapped_json_array(tmp_path):
    from datasets import Dataset, DatasetDict

    rows = [{"instruction": "a", "output": "b"}]
    DatasetDict({"train": Dataset.from_list(rows), "test": Dataset.from_list(rows * 2)}).save_to_disk(
        str(tmp_path / "dd")
    )
    assert read_examples(tmp_path / "dd").table.height == 1  # "train" by default
    assert read_examples(tmp_path / "dd", split="test").table.height == 2
    (tmp_path / "w.json").write_text(json.dumps({"data": rows * 3}), encoding="utf-8")
    assert read_examples(tmp_path / "w.json").table.height == 3


def test_cli_reads_converts_and_keeps_rejects(tmp_path, capsys):
    """python -m pipelines.io data.jsonl --out rows.parquet --rejects rejects.jsonl (as the README says)."""
    from pipelines.io import main

    data = _jsonl(tmp_path / "data.jsonl", [json.dumps(GOOD), "{oops", json.dumps({"instruction": "x"})])
    main([str(data), "--out", str(tmp_path / "rows.parquet"), "--rejects", str(tmp_path / "rejects.jsonl")])
    counts = json.loads(capsys.readouterr().out)
    assert counts["records"] == 3 and counts["examples"] == 1 and counts["rejects"] == 2
    assert read_examples(tmp_path / "rows.parquet").table["response"].to_list() == ["Blue."]
    rejects = [json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert [r["line"] for r in rejects] == [2, 3] and rejects[1]["field"] == "response"


def test_exported_rows_read_back_as_examples_not_chat(tmp_path):
    """An exported row carries a derived `messages` column; auto-detection reads it as this project's
    own row, so its context and id survive."""
    from pipelines.export import export_dataset

    table = to_table([make_example("Q?", "A.", context="Passage.", meta={"level": 1})])
    res = read_examples(export_dataset(table, tmp_path / "ds", card_info={})["parquet"])
    assert res.fmt == "example"
    assert res.table.select("id", "instruction", "context", "response").equals(
        table.select("id", "instruction", "context", "response")
    )


def test_read_passages_from_a_folder(tmp_path):
    """A folder of raw text: every passage file under it, sorted; ids keep the path so names never merge."""
    from pipelines.readers.passages import read_passages

    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_text("alpha one\nalpha two\n\n")
    (tmp_path / "sub" / "a.txt").write_text("beta\n")
    (tmp_path / "c.jsonl").write_text('{"text": "gamma"}\n{"text": ""}\n')
    (tmp_path / "notes.pdf").write_bytes(b"%PDF")  # not a passage file: ignored
    res = read_passages(tmp_path)
    assert res.table["text_id"].to_list() == ["a.txt:1", "a.txt:2", "c.jsonl:1", "sub/a.txt:1"]
    assert res.table["text"].to_list() == ["alpha one", "alpha two", "gamma", "beta"]
    assert len(res.rejects) == res.counts["rejects"] == 1 and res.rejects[0]["field"] == "text"  # the empty one
    assert read_passages(tmp_path, max_records=2).table.height == 2  # a bounded check reads no further
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no passage files"):
        read_passages(tmp_path / "empty")
