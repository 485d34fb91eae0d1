"""Export: files, card, byte-identical re-export, and exactly what push_to_hub would upload.

    .venv/bin/pytest tests/test_export.py -q

No network: ``HfApi`` is patched at its boundary (create_repo, repo_info, preupload_lfs_files,
create_commit, list_repo_tree, get_paths_info, hf_hub_download) with a small in-memory Hub, as
``datasets``' own tests patch those calls, and sockets refuse to connect while a test runs.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from fake_hub import FakeHub, no_network  # noqa: F401 -- fixture; test_push_resume imports both from here

from pipelines.export import export_dataset, push_to_hub, split_train_test, write_examples, write_rejects
from pipelines.io import read_examples
from pipelines.schema import make_example, to_table
from pipelines.shards import read_shards

TOKEN = "hf_FAKE_tokenValue_0123456789abcdef"


def _table(n: int = 7) -> pl.DataFrame:
    rows = [
        make_example(
            f"Question {i}?",
            f"Answer {i}.",
            context=f"Passage {i}." if i % 2 else "",
            source="glan" if i % 3 else "bonito:exqa",
            meta={"level": i},
        )
        for i in range(n)
    ]
    scores = ([0.5, 0.9, float("nan"), None, 1.2, 0.3, 0.7, 0.1, 0.2, 0.4] * (n // 10 + 1))[:n]
    return to_table(rows).with_columns(
        pl.Series("score_ifd", scores, dtype=pl.Float64),
        pl.Series("keep", [True] * n),
    )


CARD_INFO = {
    "title": "Test set",
    "config": {
        "run": {"seed": 3},
        "model": {"model": "embedded", "token_budget": 4096, "api_key": "sk-secret"},
    },
    "models": {"generator_and_prior": "embedded", "backend": "hf"},
    "stages": [
        {"stage": "generate_text", "rows_out": 9, "rejects": 2, "seconds": 1.5},
        {"stage": "collect", "rows_in": 9, "rows_out": 9, "rejects": 0, "seconds": 0.1},
        {
            "stage": "select",
            "rows_in": 9,
            "rows_out": 7,
            "seconds": 0.2,
            "steps": [
                {
                    "step": 1,
                    "name": "threshold(score_ifd)",
                    "rows_in": 9,
                    "rows_out": 7,
                    "dropped": 2,
                    "detail": "",
                }
            ],
        },
    ],
    "fingerprint": "abc123def456",
}


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_export_writes_every_format_with_the_same_rows(tmp_path):
    table = _table()
    paths = export_dataset(table, tmp_path / "ds", card_info=CARD_INFO, shard_rows=3)
    assert sorted(p.name for p in paths["parquet"].glob("*.parquet")) == [
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ]
    back = read_shards(paths["parquet"])
    assert back["id"].to_list() == table["id"].to_list()
    assert back["messages"][1].to_list() == [
        {"role": "user", "content": "Question 1?\n\nPassage 1."},
        {"role": "assistant", "content": "Answer 1."},
    ]

    lines = [json.loads(line) for line in paths["jsonl"].read_text().splitlines()]
    assert [r["id"] for r in lines] == table["id"].to_list()
    assert lines[2]["score_ifd"] is None  # NaN is not JSON
    assert lines[0]["messages"][0]["role"] == "user"

    import datasets

    ds = datasets.load_from_disk(str(paths["hf"]))
    assert ds["id"] == table["id"].to_list()
    assert ds.features["messages"] == datasets.List(
        {"role": datasets.Value("string"), "content": datasets.Value("string")}
    )


def test_reexport_is_byte_identical_and_drops_stale_shards(tmp_path):
    a = export_dataset(_table(), tmp_path / "a", card_info=CARD_INFO, shard_rows=3)
    b = export_dataset(_table(), tmp_path / "b", card_info=CARD_INFO, shard_rows=3)
    fa, fb = _files(a["dir"]), _files(b["dir"])
    assert fa.keys() == fb.keys() and any(k.endswith(".parquet") for k in fa)
    assert all(fa[k] == fb[k] for k in fa), [k for k in fa if fa[k] != fb[k]]

    # Exporting fewer rows into the same folder must not leave the old third shard behind.
    export_dataset(_table(4), tmp_path / "a", card_info=CARD_INFO, shard_rows=3)
    assert read_shards(a["parquet"]).height == 4
    assert not any(p.name.endswith(".tmp") for p in (tmp_path / "a").rglob("*"))


def test_empty_table_exports_a_typed_empty_shard(tmp_path):
    paths = export_dataset(_table(0), tmp_path / "e", card_info={}, shard_rows=3)
    back = pl.read_parquet(paths["parquet"] / "part-00000.parquet")
    assert back.height == 0 and back.schema["messages"] == pl.List(
        pl.Struct({"role": pl.Utf8, "content": pl.Utf8})
    )
    assert paths["jsonl"].read_text() == ""


def test_card_is_prose_with_provenance(tmp_path):
    card = export_dataset(_table(), tmp_path / "ds", card_info=CARD_INFO)["card"].read_text()
    assert not card.startswith("---")  # push_to_hub writes the YAML header itself
    assert card.startswith("# Test set\n")
    assert "| generate_text |  | 9 | 2 |" in card  # counts per stage
    assert "threshold(score_ifd)" in card  # selection steps
    assert "| glan | 4 |" in card and "| bonito:exqa | 3 |" in card  # generators, from `source`
    assert "generator_and_prior: `embedded`" in card
    assert "abc123def456" in card
    assert "```yaml" in card and "seed: 3" in card and "token_budget: 4096" in card
    assert "sk-secret" not in card and "<redacted>" in card
    # Score summary over the 5 finite values 0.5, 0.9, 1.2, 0.3, 0.7: mean 0.72, median 0.7.
    assert "| score_ifd | 5 | 0.72 |" in card and "| 0.7 |" in card
    assert "1.5" not in card  # timings belong to the run report, so the card is reproducible


def test_write_examples_to_an_hf_folder_is_atomic(tmp_path, monkeypatch):
    """A failed save_to_disk leaves the previous folder whole and no temp folder behind."""
    import datasets

    target = tmp_path / "hf_rows"
    write_examples(_table(3), target)
    assert read_examples(target).table.height == 3
    write_examples(_table(5), target)  # replaces the folder
    assert read_examples(target).table.height == 5

    def half_written(self, path, *args, **kwargs):
        Path(path).mkdir(parents=True)
        (Path(path) / "data-00000-of-00001.arrow").write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(datasets.Dataset, "save_to_disk", half_written)
    with pytest.raises(OSError, match="disk full"):
        write_examples(_table(7), target)
    assert read_examples(target).table.height == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf_rows"]


def test_writers_leave_no_temp_files(tmp_path):
    for name in ("rows.jsonl", "rows.json", "rows.parquet"):
        back = read_examples(
            write_examples(_table(4), tmp_path / name, fmt="qa" if name == "rows.json" else "example")
        )
        assert back.table.height == 4 and not back.rejects
    write_rejects([], tmp_path / "rejects.jsonl")
    assert (tmp_path / "rejects.jsonl").read_text() == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "rejects.jsonl",
        "rows.json",
        "rows.jsonl",
        "rows.parquet",
    ]


def test_unknown_card_keys_are_an_error(tmp_path):
    with pytest.raises(ValueError, match="model"):
        export_dataset(_table(), tmp_path / "ds", card_info={"model": "x"})


def test_push_to_hub_uploads_exactly_the_dataset_and_card_privately(
    tmp_path, monkeypatch, caplog, capfd, no_network,  # noqa: F811
):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    caplog.set_level(logging.DEBUG)
    hub = FakeHub()
    hub.install(monkeypatch, tmp_path)
    table = _table()
    paths = export_dataset(table, tmp_path / "ds", card_info=CARD_INFO)

    result = push_to_hub(paths["dir"], "someone/forge-test")

    assert hub.create_repo_calls[0] == {
        "repo_id": "someone/forge-test",
        "repo_type": "dataset",
        "private": True,
    }
    assert hub.repos == {"someone/forge-test": True}
    assert hub.tokens == {TOKEN}  # the environment's token reached the client
    # Commit 1 (datasets): the Parquet shard and a README that is only the YAML header.
    first, card_commit = hub.commits
    assert [(kind, path) for kind, path, _ in first["ops"]] == [
        ("CommitOperationAdd", "data/train-00000-of-00001.parquet"),
        ("CommitOperationAdd", "README.md"),
    ]
    shard = pq.read_table(io.BytesIO(hub.files["data/train-00000-of-00001.parquet"]))
    assert shard.column("id").to_pylist() == table["id"].to_list()
    assert "messages" in shard.column_names
    # Commit 2: the same header with our prose under it, on top of commit 1.
    assert [(kind, path) for kind, path, _ in card_commit["ops"]] == [("CommitOperationAdd", "README.md")]
    assert card_commit["parent"] == f"{1:040d}"
    readme = hub.files["README.md"].decode()
    header, body = readme.split("\n---\n", 1)
    assert header.startswith("---\n") and "dataset_info:" in header and "data/train-*" in header
    assert body == paths["card"].read_text()
    assert set(hub.files) == {"data/train-00000-of-00001.parquet", "README.md"}
    assert result == {
        "repo_id": "someone/forge-test",
        "url": "https://huggingface.co/datasets/someone/forge-test",
        "commit": f"{2:040d}",
        "private": True,
    }

    # The token is nowhere: not uploaded, not in any file written, not logged or printed.
    assert all(TOKEN.encode() not in data for data in hub.files.values())
    for p in tmp_path.rglob("*"):
        if p.is_file():
            assert TOKEN.encode() not in p.read_bytes(), p
    out, err = capfd.readouterr()
    assert TOKEN not in out + err + caplog.text
    assert TOKEN not in json.dumps(result)


def test_push_refuses_an_existing_public_repo_when_private(tmp_path, monkeypatch, no_network):  # noqa: F811 -- the fixture from fake_hub
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    hub = FakeHub()
    hub.repos["someone/public"] = False
    hub.install(monkeypatch, tmp_path)
    paths = export_dataset(_table(), tmp_path / "ds", card_info={})
    with pytest.raises(RuntimeError, match="public"):
        push_to_hub(paths["dir"], "someone/public")
    assert hub.commits == []


def test_push_without_a_token_says_how_to_set_it(tmp_path, monkeypatch, no_network):  # noqa: F811 -- the fixture from fake_hub
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)  # no saved `hf auth login` either
    paths = export_dataset(_table(), tmp_path / "ds", card_info={})
    with pytest.raises(RuntimeError, match="HF_TOKEN"):
        push_to_hub(paths["dir"], "someone/x")


def test_card_shows_what_selection_kept_and_dropped(tmp_path):
    rows = [make_example(f"Q{i}?", f"A{i}.", source="glan" if i < 6 else "bonito") for i in range(10)]
    selected = to_table(rows).with_columns(pl.Series("score_target_sim", [i / 10 for i in range(10)]),
                                           pl.Series("keep", [i >= 5 for i in range(10)]))
    paths = export_dataset(selected.filter(pl.col("keep")), tmp_path / "d", card_info={}, selected=selected)
    card = paths["card"].read_text()
    assert "5 of 10 rows kept." in card
    assert "| source | bonito | 4 | 0 |" in card and "| source | glan | 1 | 5 |" in card
    assert "(plots/score_target_sim.png)" in card and (tmp_path / "d" / "plots" / "score_target_sim.png").exists()


def test_split_train_test_is_seeded_disjoint_and_order_free():
    table = _table(40)
    train, test = split_train_test(table, 0.25, seed=1)
    assert (train.height, test.height) == (30, 10)
    assert set(train["id"]) | set(test["id"]) == set(table["id"]) and not set(train["id"]) & set(test["id"])
    assert train["id"].to_list() == [i for i in table["id"] if i in set(train["id"])]  # order kept
    shuffled_train, shuffled_test = split_train_test(table.reverse(), 0.25, seed=1)
    assert set(shuffled_test["id"]) == set(test["id"])  # depends on ids and seed only
    assert set(split_train_test(table, 0.25, seed=2)[1]["id"]) != set(test["id"])
    assert split_train_test(table, 0.0)[1].height == 0
    with pytest.raises(ValueError, match="test_fraction"):
        split_train_test(table, 1.0)


def test_export_with_a_test_split_writes_both_and_pushes_both(tmp_path, monkeypatch, no_network):  # noqa: F811 -- the fixture from fake_hub
    import datasets

    info = {**CARD_INFO, "scores": {"score_ifd": "IFD: loss with / without the instruction"},
            "generators": {"GLAN (generate_taxonomy)": {"questions_per_syllabus": 4}}}
    paths = export_dataset(_table(20), tmp_path / "ds", card_info=info, test_fraction=0.2, seed=0)
    train = datasets.load_from_disk(str(paths["hf"]))
    test = datasets.load_from_disk(str(paths["test_hf"]))
    assert (len(train), len(test)) == (16, 4)
    assert len(paths["test_jsonl"].read_text().splitlines()) == 4
    card = paths["card"].read_text()
    assert "## Splits" in card and "| test | 4 |" in card
    assert "questions_per_syllabus" in card and "IFD: loss with / without the instruction" in card
    assert "Rows per source" in card

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    hub = FakeHub()
    hub.install(monkeypatch, tmp_path)
    push_to_hub(paths["dir"], "someone/split-test")
    pushed = sorted(p for p in hub.files if p.endswith(".parquet"))
    assert pushed == ["data/test-00000-of-00001.parquet", "data/train-00000-of-00001.parquet"]
    shard = pq.read_table(io.BytesIO(hub.files["data/test-00000-of-00001.parquet"]))
    assert sorted(shard.column("id").to_pylist()) == sorted(test["id"])


def test_hf_folder_streamed_from_shards_loads_the_same_rows_in_several_files(tmp_path, monkeypatch):
    """The bounded-memory HF writer: rows in shard order, split into files by size, same bytes on a
    rerun, and an empty shard list still gives a typed empty dataset."""
    import datasets

    import pipelines.writers.hf_folder as hf_folder
    from pipelines.export import to_hf_dataset

    rows = _table(7).with_columns(pl.lit(1.5).alias("score_x"))
    shards = []
    for i, lo in enumerate(range(0, 7, 3)):
        shards.append(tmp_path / f"part-{i:05d}.parquet")
        rows.slice(lo, 3).write_parquet(shards[-1])
    features = to_hf_dataset(rows).features
    monkeypatch.setattr(hf_folder, "MAX_SHARD_BYTES", 1)  # a new file after every batch
    monkeypatch.setattr(hf_folder, "BATCH_ROWS", 2)
    out = tmp_path / "hf"
    assert hf_folder.save_parquet_shards_to_disk(shards, features, out) == 7
    files = sorted(p.name for p in out.iterdir())
    # shards of 3+3+1 rows re-batched to 2+2+2+1 whatever the pieces: the same files for any sharding
    assert files[0] == "data-00000-of-00004.arrow" and len(files) == 4 + 2
    ds = datasets.load_from_disk(str(out))
    assert ds.features == features
    assert ds.to_polars().equals(to_hf_dataset(rows).to_polars())
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    hf_folder.save_parquet_shards_to_disk(shards, features, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []

    hf_folder.save_parquet_shards_to_disk([], features, tmp_path / "empty")
    empty = datasets.load_from_disk(str(tmp_path / "empty"))
    assert len(empty) == 0 and empty.features == features


def test_push_to_hub_uploads_the_cards_plots_with_it(tmp_path, monkeypatch, no_network):  # noqa: F811 -- the fixture from fake_hub
    """The card shows plots/<score>.png: they go up in the card's commit, so the images work on the Hub."""
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    hub = FakeHub()
    hub.install(monkeypatch, tmp_path)
    selected = _table(10).with_columns(pl.Series("keep", [i % 3 != 0 for i in range(10)]))
    paths = export_dataset(selected.filter(pl.col("keep")), tmp_path / "ds", card_info=CARD_INFO, selected=selected)
    png = tmp_path / "ds" / "plots" / "score_ifd.png"
    assert "(plots/score_ifd.png)" in paths["card"].read_text() and png.exists()
    push_to_hub(paths["dir"], "someone/plots")
    card_commit = hub.commits[-1]
    assert [path for _, path, _ in card_commit["ops"]] == ["README.md", "plots/score_ifd.png"]
    assert hub.files["plots/score_ifd.png"] == png.read_bytes()
    assert set(hub.files) == {"data/train-00000-of-00001.parquet", "README.md", "plots/score_ifd.png"}


def test_card_takes_the_train_comparison_once_and_replaces_it():
    from pipelines.finetune.compare import comparison
    from pipelines.writers.card import with_comparison

    card = "# Data\n\nSome prose.\n\n## Configuration\n\n```yaml\na: 1\n```\n"
    arms = {"selected": {"eval_loss": 2.0, "eval_loss_before": 3.0, "rows": 4},
            "random-s0": {"eval_loss": 2.5, "rows": 4}, "random-s1": {"eval_loss": 2.3, "rows": 4}}
    first = with_comparison(card, comparison(arms))
    assert first.index("selection_gain=0.4 ") < first.index("## Configuration")
    assert with_comparison(first, comparison(arms)) == first  # a resumed train stage changes nothing
    arms["selected"]["eval_loss"] = 2.7
    second = with_comparison(first, comparison(arms))
    assert second.count("## Does the selection beat random?") == 1 and "worse than random" in second
    assert with_comparison(second, None) == card


def test_messages_column_is_to_messages_of_each_row():
    """The export's vectorised messages match the per-row chat form (context empty, missing or set)."""
    from pipelines.schema import to_messages, with_messages

    t = pl.DataFrame({"instruction": ["a", "b", "c", ""], "context": ["x", "", None, "y"],
                      "response": ["r1", "r2", "r3", "r4"]})
    assert with_messages(t)["messages"].to_list() == [to_messages(i, c or "", r) for i, c, r in t.iter_rows()]
    assert with_messages(t.clear())["messages"].to_list() == []
