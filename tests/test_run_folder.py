"""The run folder is data the user may share or receive (issue 23): its records name files relative
to it, config.json holds no secret, claim() refuses a folder this project did not make, a run name
cannot point outside out_dir."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.config import ConfigError, load_config
from flows.run_folder import RunFolder, RunFolderConflict


@pytest.mark.parametrize("name", ["../../x", "/tmp/abs", "a/b", ".", "..", "x y", ""])
def test_run_name_must_be_a_plain_folder_name(name):
    with pytest.raises(ConfigError, match="run.name"):
        load_config(overrides=[f"run.name='{name}'"])


def test_a_plain_run_name_stays_inside_out_dir(tmp_path):
    cfg = load_config(overrides=["run.name=my-run_1.2", f"run.out_dir={tmp_path}"])
    assert cfg.run_dir() == tmp_path / "my-run_1.2"


def test_claim_refuses_a_non_empty_folder_it_did_not_make(tmp_path):
    theirs = tmp_path / "photos"
    theirs.mkdir()
    (theirs / "part-00000.parquet").write_bytes(b"someone's file")
    with pytest.raises(RunFolderConflict, match="not a run folder of this project") as err:
        RunFolder(theirs).claim("aaa", "{}")
    assert "part-00000.parquet" in str(err.value) and "--run-name" in str(err.value)
    assert sorted(p.name for p in theirs.iterdir()) == ["part-00000.parquet"]  # untouched


def test_claim_takes_a_new_folder_holding_only_the_lock_and_the_log(tmp_path):
    run = RunFolder(tmp_path / "new")
    with run.lock():
        run.log.write_text("started\n")
        run.claim("aaa", "{}")
    run.claim("aaa", "{}")  # and resumes its own folder, now full of its files
    assert (run.root / ".config-fingerprint").read_text() == "aaa"


def test_config_json_holds_no_secret(tmp_path):
    cfg = load_config(overrides=["model.backend=openai", "model.base_url=http://me:pw123@host:8000/v1?key=sk-XYZ",
                                 "score.models.judge.base_url=https://judge.example/v1?api_key=sk-JUDGE"])
    run = RunFolder(tmp_path / "r")
    run.claim(cfg.fingerprint(), cfg.model_dump_json(indent=2))
    saved = run.config_file.read_text()
    for secret in ("pw123", "sk-XYZ", "sk-JUDGE", "me:"):
        assert secret not in saved
    config = json.loads(saved)
    assert config["model"]["base_url"] == "http://host:8000/v1"
    assert config["score"]["models"]["judge"]["base_url"] == "https://judge.example/v1"


def test_records_name_files_relative_to_the_run_folder(tmp_path):
    run = RunFolder(tmp_path / "r")
    outside = str(tmp_path / "elsewhere" / "x.jsonl")
    record = run.write_record({"stage": "export", "outputs": {"parquet": run.dataset / "parquet",
                                                              "card": str(run.dataset / "README.md")},
                               "root": str(run.root), "input": outside, "note": f"wrote {run.root}/x", "n": 3})
    saved = json.loads(run.record_path("export").read_text())
    assert saved == record == run.load_record("export")
    assert record["outputs"] == {"parquet": "dataset/parquet", "card": "dataset/README.md"}
    # A path outside the run folder (and the working directory) is named by its file alone.
    assert record["root"] == "." and record["input"] == "x.jsonl" and record["n"] == 3
    assert record["note"] == "wrote x" and str(tmp_path) not in json.dumps(record)
    assert run.path(record["outputs"]["parquet"]) == run.dataset / "parquet"
    assert run.path(outside) == Path(outside)  # absolute names (older records) still resolve


def test_a_relative_run_root_and_a_symlinked_one_are_both_recognised(tmp_path, monkeypatch):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    monkeypatch.chdir(tmp_path)
    run = RunFolder(Path("link"))
    got = run.relative({"a": "link/dataset/x", "b": str(tmp_path / "link" / "y"), "c": str(tmp_path / "real" / "z")})
    assert got == {"a": "dataset/x", "b": "y", "c": "z"}


def _result_file(folder: Path, name: str, serializer: dict, result: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(json.dumps({"metadata": {"storage_key": name, "expiration": None, "serializer": serializer,
                                             "prefect_version": "3", "storage_block_id": None},
                                "result": result}))
    return path


