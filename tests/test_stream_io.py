"""Chunked reading (pipelines.stream_io) gives read_examples' rows and rejects; collect streams by shard."""

import json
from pathlib import Path

import polars as pl
import pytest

from flows.config import load_config
from flows.pipeline import run_stage
from flows.run_folder import RunFolder
from pipelines.io import read_examples
from pipelines.shards import list_shards, read_shards
from pipelines.stream_io import ShardWriter, iter_examples


def _write_input(path, n, bad_every=7, offset=0):
    lines = []
    for i in range(n):
        j = i + offset
        if i % bad_every == 3:
            lines.append(b'{"instruction": "broken ' + str(j).encode() + b'"')  # not JSON
        elif i % bad_every == 5:
            lines.append(json.dumps({"instruction": f"q{j}", "output": ""}).encode())  # empty answer
        elif i % bad_every == 6:
            lines.append(b'{"instruction": "bad byte \xff ' + str(j).encode() + b'", "output": "x"}')
        else:
            lines.append(json.dumps({"instruction": f"question {j}", "output": f"answer {j}"}).encode())
        if i % 10 == 0:
            lines.append(b"")  # blank lines count for line numbers only
    path.write_bytes(b"\n".join(lines) + b"\n")


@pytest.mark.parametrize(("chunk_rows", "block_bytes"), [(4, 64), (1000, 1 << 20), (9, 300)])
def test_iter_examples_equals_read_examples(tmp_path, chunk_rows, block_bytes):
    path = tmp_path / "in.jsonl"
    _write_input(path, 60)
    whole = read_examples(path)
    parts = list(iter_examples(path, chunk_rows=chunk_rows, block_bytes=block_bytes))
    assert all(p.counts["records"] <= chunk_rows for p in parts)
    assert pl.concat([p.table for p in parts]).equals(whole.table)
    assert [r for p in parts for r in p.rejects] == whole.rejects
    assert sum(p.counts["rejects"] for p in parts) == whole.counts["rejects"] > 0
    assert {r["reason"].split(" (")[0] for r in whole.rejects} >= {"not valid UTF-8"}


def test_iter_examples_errors_name_the_file(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(ValueError, match="empty"):
        list(iter_examples(empty))
    with pytest.raises(ValueError, match="not found"):
        list(iter_examples(tmp_path / "missing.jsonl"))


def test_shard_writer_matches_write_shards(tmp_path):
    t = pl.DataFrame({"x": list(range(23))})
    w = ShardWriter(tmp_path / "a", 5)
    for part in (t.slice(0, 3), t.slice(3, 1), t.slice(4, 7), t.slice(11, 0), t.slice(11, 12)):
        w.add(part)
    (tmp_path / "a" / "part-00009.parquet").write_bytes(b"stale")
    assert w.close() == 5
    assert [pl.read_parquet(p).height for p in list_shards(tmp_path / "a")] == [5, 5, 5, 5, 3]
    assert read_shards(tmp_path / "a").equals(t)


def test_collect_streams_several_inputs_in_order_with_rejects(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    _write_input(a, 30)
    _write_input(b, 25, offset=100)
    cfg = load_config(overrides=[
        "generate.taxonomy.enabled=false", "generate.text.enabled=false", f"generate.inputs=[{a}, {b}]",
        "model.model=tiny", "model.backend=hf", "run.shard_size=4", f"run.out_dir={tmp_path / 'runs'}",
    ])
    run = RunFolder(cfg.run_dir())
    run.claim(cfg.fingerprint(), cfg.model_dump_json())
    rec = run_stage("collect", run, cfg)
    ra, rb = read_examples(a), read_examples(b)
    expected = pl.concat([ra.table, rb.table]).select(read_shards(run.examples).columns)
    assert read_shards(run.examples).equals(expected)
    # Each input has shards of its own (a new input file only adds shards): 30 and 25 rows -> 8 + 7.
    assert rec["rows_out"] == expected.height and rec["shards"] == -(-ra.table.height // 4) - (-rb.table.height // 4)
    assert rec["rejects"] == len(ra.rejects) + len(rb.rejects)
    assert rec["per_source"] == {a.name: ra.table.height, b.name: rb.table.height}  # names, as rows give them
    written = [json.loads(x) for x in run.input_rejects(a).read_text().splitlines()]
    assert [r["line"] for r in written] == [r["line"] for r in ra.rejects]


def test_export_by_slice_and_from_shards_gives_the_same_files(tmp_path):
    import datasets

    from pipelines.export import to_hf_dataset
    from pipelines.schema import make_example, to_table
    from pipelines.writers.rows import export_table
    from pipelines.writers.split import SplitWriter

    table = to_table([make_example(f"question {i}", f"answer {i}", context="ctx" if i % 2 else "",
                                   meta={"k": i}) for i in range(11)])
    table = table.with_columns(pl.Series("score_x", [float("nan") if i == 4 else i / 3 for i in range(11)]))
    rows = export_table(table, slice_rows=3)  # several slices

    def write_split(out):
        w = SplitWriter(out, shard_rows=4, slice_rows=3)
        w.add(rows)
        return w.close(rows.clear())

    paths = write_split(tmp_path / "out")
    assert len(list(paths["parquet"].glob("part-*.parquet"))) == 3
    lines = [json.loads(x) for x in paths["jsonl"].read_text(encoding="utf-8").splitlines()]
    assert [list(x) for x in lines] == [rows.columns] * 11  # keys in column order
    assert [x["score_x"] for x in lines] == [None if i == 4 else i / 3 for i in range(11)]  # NaN is null
    assert lines == [{**r, "score_x": None if i == 4 else r["score_x"]} for i, r in enumerate(rows.iter_rows(named=True))]
    got, expected = datasets.load_from_disk(str(paths["hf"])), to_hf_dataset(rows)
    assert got.features == expected.features
    assert got.to_list()[:4] == expected.to_list()[:4] and got.num_rows == 11
    again = write_split(tmp_path / "again")
    assert (again["hf"] / "state.json").read_bytes() == (paths["hf"] / "state.json").read_bytes()
    assert not list((tmp_path / "out").glob(".hf-cache.*"))


@pytest.mark.parametrize(("include_dropped", "test_fraction"), [(False, 0.0), (False, 0.3), (True, 0.25)])
def test_export_selected_by_batch_equals_export_dataset(tmp_path, include_dropped, test_fraction):
    import datasets

    from pipelines.export import export_dataset
    from pipelines.export_stream import export_selected
    from pipelines.schema import make_example, to_table

    n = 37
    table = to_table([make_example(f"question {i}", f"answer {i}", context="ctx" if i % 2 else "",
                                   source=f"src{i % 3}", meta={"task_type": f"t{i % 2}"}) for i in range(n)])
    table = table.with_columns(pl.Series("score_x", [i / 7 for i in range(n)]),
                               pl.Series("keep", [i % 4 != 0 for i in range(n)]),
                               pl.Series("dropped_by", [None if i % 4 else "top_k" for i in range(n)], dtype=pl.Utf8))
    path = tmp_path / "all.parquet"
    table.write_parquet(path, row_group_size=5)
    info = {"title": "t", "fingerprint": "abc"}
    rows = table if include_dropped else table.filter(pl.col("keep"))
    a = export_dataset(rows, tmp_path / "a", card_info=info, shard_rows=6, selected=table,
                       test_fraction=test_fraction, seed=3)
    b, count = export_selected(path, tmp_path / "b", card_info=info, include_dropped=include_dropped, shard_rows=6,
                               test_fraction=test_fraction, seed=3, batch_rows=4)
    assert count == rows.height and a.keys() == b.keys()
    for key in a:
        if key in ("jsonl", "test_jsonl", "card"):
            assert a[key].read_bytes() == b[key].read_bytes(), key
        elif key.endswith("parquet"):
            pa_, pb = sorted(a[key].glob("*.parquet")), sorted(b[key].glob("*.parquet"))
            assert len(pa_) == len(pb) and all(pl.read_parquet(x).equals(pl.read_parquet(y)) for x, y in zip(pa_, pb, strict=True))
        elif key.endswith("hf"):
            da, db = datasets.load_from_disk(str(a[key])), datasets.load_from_disk(str(b[key]))
            assert da.features == db.features and da.to_list() == db.to_list()
    assert sorted(p.name for p in (tmp_path / "b" / "plots").iterdir()) == ["score_x.png"]


@pytest.mark.parametrize(("include_dropped", "test_fraction"), [(False, 0.0), (True, 0.3)])
def test_export_selected_takes_kept_rows_from_other_shards(tmp_path, include_dropped, test_fraction):
    """The R-Tuning export: kept rows from transformed/part-*.parquet (with a column of their own),
    dropped rows from the selection file, batch by batch -- the files of the in-memory concat."""
    from pipelines.export import export_dataset
    from pipelines.export_stream import export_selected
    from pipelines.schema import make_example, to_table
    from pipelines.shards import read_short_columns, write_shards

    n = 30
    table = to_table([make_example(f"question {i}", f"answer {i}", source=f"src{i % 3}") for i in range(n)])
    table = table.with_columns(pl.Series("score_x", [i / 7 for i in range(n)]), pl.Series("keep", [i % 3 != 0 for i in range(n)]))
    table.write_parquet(tmp_path / "selected.parquet", row_group_size=4)
    kept = table.filter(pl.col("keep"))
    transformed = kept.with_columns(pl.col("response") + " I am sure.", pl.col("response").alias("response_original"))
    write_shards(transformed, tmp_path / "transformed", 7)
    dropped = [table.filter(~pl.col("keep"))] if include_dropped else []
    whole = pl.concat([read_shards(tmp_path / "transformed"), *dropped], how="diagonal_relaxed")
    info = {"title": "t"}
    a = export_dataset(whole, tmp_path / "a", card_info=info, selected=read_short_columns(tmp_path / "selected.parquet"),
                       shard_rows=6, test_fraction=test_fraction, seed=1)
    b, count = export_selected(tmp_path / "selected.parquet", tmp_path / "b", card_info=info,
                               include_dropped=include_dropped, kept_shards=list_shards(tmp_path / "transformed"),
                               shard_rows=6, test_fraction=test_fraction, seed=1, batch_rows=5)
    assert count == whole.height and a.keys() == b.keys()
    for key in a:
        if key == "dir":
            continue
        files_a = sorted(p for p in Path(a[key]).rglob("*") if p.is_file()) if a[key].is_dir() else [a[key]]
        files_b = sorted(p for p in Path(b[key]).rglob("*") if p.is_file()) if b[key].is_dir() else [b[key]]
        assert [p.name for p in files_a] == [p.name for p in files_b], key
        assert all(x.read_bytes() == y.read_bytes() for x, y in zip(files_a, files_b, strict=True)), key
    out = read_shards(b["parquet"])
    assert out.filter(~pl.col("keep"))["response_original"].is_null().all()
    assert out.filter(pl.col("keep"))["response"].str.ends_with(" I am sure.").all()


def test_an_export_that_fails_midway_keeps_the_last_dataset_whole(tmp_path):
    """The HF folder is written as batches arrive: a failure part way leaves the previous folder
    as it was and no temporary folder behind."""
    import datasets

    from pipelines.export import export_dataset
    from pipelines.export_stream import export_rows
    from pipelines.schema import make_example, to_table

    table = to_table([make_example(f"question {i}", f"answer {i}") for i in range(30)])
    info = {"title": "t", "fingerprint": "abc"}
    export_dataset(table.head(10), tmp_path / "out", card_info=info, shard_rows=4)

    def batches():
        yield table.slice(0, 12)
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        export_rows(batches(), table, table.clear(), tmp_path / "out", card_info=info, shard_rows=4)
    assert datasets.load_from_disk(str(tmp_path / "out" / "hf"))["instruction"] == table.head(10)["instruction"].to_list()
    assert [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".")] == []
    # a killed export leaves its temp folder and file; the next export clears them
    (tmp_path / "out" / ".hf.k1ll3d.tmp" / "new").mkdir(parents=True)
    (tmp_path / "out" / ".data.jsonl.k1ll3d.tmp").write_text("{}")
    (tmp_path / "out" / ".keep-me").write_text("not ours")
    export_dataset(table, tmp_path / "out", card_info=info, shard_rows=4)
    assert [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".")] == [".keep-me"]
