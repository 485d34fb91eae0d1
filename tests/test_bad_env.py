"""A full or read-only output folder: one clear error naming the file, no partial shard taken as
done, and the rerun after the fix finishes with the same output as an undisturbed run."""

from __future__ import annotations

import errno
import tempfile
from pathlib import Path

import polars as pl
import pytest

from flows.config import load_config
from flows.pipeline import run_stage
from flows.run_folder import RunFolder
from flows.stages.__main__ import main as stages_main
from pipelines.shards import WriteError, atomic_write_jsonl, list_shards


def _run(tmp_path: Path, name: str) -> tuple[RunFolder, object]:
    data = tmp_path / "in.jsonl"
    if not data.exists():
        atomic_write_jsonl([{"instruction": f"What is {i} plus {i}?", "input": f"Numbers: {i}." if i % 2 else "",
                             "output": f"It is {2 * i}."} for i in range(10)], data)
    cfg = load_config(overrides=[
        "generate.taxonomy.enabled=false", "generate.text.enabled=false", f"generate.inputs=[{data}]",
        "model.model=tiny", "model.backend=hf", "score.scores=[ifd]", "run.shard_size=4",
        f"run.out_dir={tmp_path / 'runs'}", f"run.name={name}",
    ])
    run = RunFolder(cfg.run_dir())
    run.claim(cfg.fingerprint(), cfg.model_dump_json())
    return run, cfg


def test_disk_full_mid_shard_then_rerun(tmp_path, monkeypatch):
    clean, ccfg = _run(tmp_path, "clean")
    run_stage("collect", clean, ccfg)
    run_stage("score", clean, ccfg)

    run, cfg = _run(tmp_path, "full")
    run_stage("collect", run, cfg)
    real = pl.DataFrame.write_parquet
    calls = []

    def full_disk(self, file, *a, **kw):
        if Path(file).parent == run.scored:
            calls.append(file)
            if len(calls) == 2:  # the second scored shard: half written, then the disk is full
                Path(file).write_bytes(b"PAR1 partial")
                raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, file, *a, **kw)

    monkeypatch.setattr(pl.DataFrame, "write_parquet", full_disk)
    with pytest.raises(WriteError) as e:
        run_stage("score", run, cfg)
    assert str(e.value) == f"cannot write {run.scored / 'part-00001.parquet'}: No space left on device"
    assert [p.name for p in list_shards(run.scored)] == ["part-00000.parquet"]  # no partial shard
    assert not list(run.scored.glob("*.tmp"))
    done = list_shards(run.scored)[0].stat()

    monkeypatch.setattr(pl.DataFrame, "write_parquet", real)  # space freed: the same call resumes
    run_stage("score", run, cfg)
    assert list_shards(run.scored)[0].stat().st_mtime_ns == done.st_mtime_ns  # finished shard kept
    assert list_shards(run.scored)[0].stat().st_ino == done.st_ino
    got = [p.read_bytes() for p in list_shards(run.scored)]
    assert got == [p.read_bytes() for p in list_shards(clean.scored)] and len(got) == 3


def test_read_only_folder_gives_one_error_line(tmp_path, monkeypatch, capsys):
    run, cfg = _run(tmp_path, "ro")
    run.examples.mkdir(parents=True)
    run.examples.chmod(0o555)
    real = tempfile.mkstemp

    def read_only(*a, dir=None, **kw):  # root ignores the mode bits: refuse as the kernel would
        if dir is not None and Path(dir) == run.examples:
            raise PermissionError(errno.EACCES, "Permission denied", str(dir))
        return real(*a, dir=dir, **kw)

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    assert stages_main(["collect", str(run.root)]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(run.examples) in errors[0] and "Permission denied" in errors[0]
    assert list_shards(run.examples) == [] and run.load_record("collect") is None

    monkeypatch.setattr(tempfile, "mkstemp", real)
    run.examples.chmod(0o755)
    assert stages_main(["collect", str(run.root)]) == 0
    assert len(list_shards(run.examples)) == 3
    assert pl.concat([pl.read_parquet(p) for p in list_shards(run.examples)]).height == 10
