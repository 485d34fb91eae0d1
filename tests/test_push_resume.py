"""A Hub push that fails on its second commit (the card) says so clearly, and the rerun finishes
the push with the same files on the Hub: no duplicate data shards, the card's prose in README.md."""

from __future__ import annotations

import pytest
from test_export import CARD_INFO, TOKEN, FakeHub, _table, no_network  # noqa: F401 -- fixture

from pipelines.export import export_dataset, push_to_hub


def test_push_failing_on_the_card_commit_then_rerun(tmp_path, monkeypatch, no_network):  # noqa: F811
    from huggingface_hub import HfApi

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    hub = FakeHub()
    hub.install(monkeypatch, tmp_path)
    paths = export_dataset(_table(), tmp_path / "ds", card_info=CARD_INFO)
    from fsspec.implementations.dirfs import DirFileSystem

    def read_text(fs, path, encoding=None, errors=None, newline=None, **kw):  # a rerun reads the old card
        if path not in hub.files:  # datasets reads the repo's README.md through a folder view
            raise FileNotFoundError(path)
        return hub.files[path].decode(encoding or "utf-8")

    monkeypatch.setattr(DirFileSystem, "read_text", read_text)
    commit = HfApi.create_commit

    def second_fails(api, repo_id, operations, **kw):
        if len(hub.commits) == 1:
            raise OSError("connection reset by peer")
        return commit(api, repo_id, operations, **kw)

    monkeypatch.setattr(HfApi, "create_commit", second_fails)
    with pytest.raises(RuntimeError) as e:
        push_to_hub(paths["dir"], "someone/resume")
    msg = str(e.value)
    assert "someone/resume" in msg and "dataset card" in msg and "connection reset by peer" in msg
    assert "run the same command again" in msg
    assert TOKEN not in msg
    data_files = set(hub.files)

    monkeypatch.setattr(HfApi, "create_commit", commit)  # the network is back
    result = push_to_hub(paths["dir"], "someone/resume")
    assert set(hub.files) == data_files == {"data/train-00000-of-00001.parquet", "README.md"}
    assert hub.files["README.md"].decode().split("\n---\n", 1)[1] == paths["card"].read_text()
    assert result["commit"] == f"{len(hub.commits):040d}"
