"""Incremental runs for schedules (issue 20): inputs given as globs and folders expand at run time,
each input file gets shards of its own, so a new file adds shards and scores only them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from flows.config import load_config
from flows.inputs import expand_inputs
from flows.pipeline import run_stage
from flows.run_folder import RunFolder
from pipelines.shards import atomic_write_jsonl, list_shards

REPO = Path(__file__).resolve().parents[1]


def _rows(tag: str, n: int) -> list[dict]:
    return [{"instruction": f"Night {tag}, question {i}: what does item {tag}{i} cost?", "input": "",
             "output": f"It costs {i % 7 + 1} dollars."} for i in range(n)]


def _cfg(tmp: Path, inputs: str, name: str = "nightly", shard_size: int = 4):
    return load_config(overrides=[
        "generate.taxonomy.enabled=false", "generate.text.enabled=false", f"generate.inputs=[{inputs}]",
        "model.model=tiny", "model.backend=hf", "score.scores=[ifd]", f"run.shard_size={shard_size}",
        f"run.out_dir={tmp / 'runs'}", f"run.name={name}"])


def test_globs_and_folders_expand_sorted_and_keep_the_fingerprint(tmp_path):
    inc = tmp_path / "incoming"
    inc.mkdir()
    atomic_write_jsonl(_rows("b", 2), inc / "b.jsonl")
    atomic_write_jsonl(_rows("a", 2), inc / "a.jsonl")
    (inc / "notes.txt").write_text("not data")
    (inc / ".partial.jsonl").write_text("")  # hidden: a file still being copied in
    cfg = _cfg(tmp_path, f"{inc}/*.jsonl")
    before = cfg.fingerprint()
    assert expand_inputs(cfg.generate.inputs) == [f"{inc}/a.jsonl", f"{inc}/b.jsonl"]
    assert expand_inputs([str(inc)]) == [f"{inc}/a.jsonl", f"{inc}/b.jsonl"]  # a folder: its data files
    assert expand_inputs([f"{inc}/*.jsonl", f"{inc}/b.jsonl"]) == [f"{inc}/a.jsonl", f"{inc}/b.jsonl"]  # once
    atomic_write_jsonl(_rows("c", 2), inc / "c.jsonl")
    after = _cfg(tmp_path, f"{inc}/*.jsonl")
    assert after.fingerprint() == before and after.run_dir() == cfg.run_dir()  # the pattern is the config
    assert expand_inputs(after.generate.inputs)[-1] == f"{inc}/c.jsonl"


def test_an_inserted_file_renumbers_and_score_moves_its_shards(tmp_path):
    inc = tmp_path / "incoming"
    atomic_write_jsonl(_rows("a", 8), inc / "a.jsonl")
    atomic_write_jsonl(_rows("c", 6), inc / "c.jsonl")
    cfg = _cfg(tmp_path, f"{inc}/")
    run = RunFolder(cfg.run_dir())
    run.claim(cfg.fingerprint(), cfg.model_dump_json())
    first = run_stage("collect", run, cfg)
    assert first["shards"] == 4 and first["rows_new"] == 14 and first["rows_reused"] == 0  # a: 2 shards, c: 2
    run_stage("score", run, cfg)
    c_scored = [pl.read_parquet(run.scored / f"part-0000{i}.parquet") for i in (2, 3)]

    atomic_write_jsonl(_rows("b", 3), inc / "b.jsonl")  # sorts between a and c
    second = run_stage("collect", run, cfg)
    assert second["shards"] == 5 and second["rows_new"] == 3 and second["rows_reused"] == 14
    scored = run_stage("score", run, cfg)
    assert scored["rows_rescored"] == 3 and scored["rows_reused"] == 14 and scored["shards_renumbered"] == 2
    assert any("3 rows rescored" in n for n in scored["notes"])
    for got, want in zip([pl.read_parquet(run.scored / f"part-0000{i}.parquet") for i in (3, 4)], c_scored, strict=True):
        assert got.equals(want)  # c's scores moved with its rows, not recomputed
    counts = {i: json.loads(run.score_counts(i).read_text())["made_from"] for i in range(5)}
    assert len(set(counts.values())) == 5 and not list(run.scored.glob(".relink-*"))

    (inc / "b.jsonl").unlink()  # and back: the surplus scored shard goes, nothing is rescored
    run_stage("collect", run, cfg)
    scored = run_stage("score", run, cfg)
    assert scored["rows_rescored"] == 0 and len(list_shards(run.scored)) == 4


# --- three nightly runs of the flow, each with a new file in incoming/ -------------------------

def _flow(tmp: Path, pattern: str, name: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PREFECT_HOME=str(tmp / "prefect"), HF_HUB_OFFLINE="1", PREFECT_LOGGING_LEVEL="WARNING")
    args = ["--no-taxonomy", "--no-text", "--model", "tiny", "--backend", "hf", "--input", pattern,
            "--out-dir", str(tmp / "runs"), "--run-name", name, "--scores", "ifd",
            "--set", "run.shard_size=4",
            "--set", "select.steps=[{dedup: {near: true}}, {top_k: {column: score_ifd, fraction: 0.5}}]"]
    res = subprocess.run([sys.executable, "-m", "flows.build_dataset", *args], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def _stamps(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in list_shards(folder)}


def _dataset(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted((run / "dataset").rglob("*"))
            if p.is_file() and p.suffix in (".parquet", ".jsonl")}


@pytest.mark.integration  # four flow runs: 4-6 minutes on 2 shared cores
def test_three_nightly_runs_score_only_new_shards_and_equal_one_run_over_all(tmp_path):
    inc = tmp_path / "incoming"
    inc.mkdir()
    pattern, run = f"{inc}/*.jsonl", tmp_path / "runs" / "nightly"
    nights = {"2026-01-01": _rows("a", 8), "2026-01-02": _rows("b", 6), "2026-01-03": _rows("c", 5)}
    nights["2026-01-03"] += _rows("a", 2)  # the third night repeats two rows of the first: dedup across nights
    seen: dict[str, tuple[int, int]] = {}
    records = []
    for night, rows in nights.items():
        atomic_write_jsonl(rows, inc / f"{night}.jsonl")
        _flow(tmp_path, pattern, "nightly")
        scored = _stamps(run / "scored")
        assert all(scored[k] == v for k, v in seen.items()), "an unchanged scored shard was rewritten"
        collect = json.loads((run / "stages" / "collect.json").read_text())
        score = json.loads((run / "stages" / "score.json").read_text())
        assert score["shards_rescored"] == len(scored) - len(seen)  # the new file's shards only
        assert score["rows_rescored"] == collect["rows_new"] == len(rows)
        assert score["rows_reused"] == collect["rows_reused"] == sum(map(len, list(nights.values())[:len(records)]))
        records.append((collect["rows_new"], collect["rows_reused"]))
        seen = scored
    report = (run / "report.md").read_text()
    assert "7 rows rescored (2 shards), 14 reused (4 shards kept)" in report  # the notes of night 3
    selected = pl.read_parquet(run / "selected" / "all.parquet")
    assert selected.height == 21 and selected["dropped_by"].str.starts_with("dedup").sum() >= 2
    print("nightly rows (new, reused):", records)

    _flow(tmp_path, pattern, "all-at-once")  # one run over the three files, in a fresh folder
    once, nightly = _dataset(tmp_path / "runs" / "all-at-once"), _dataset(run)
    assert once and once.keys() == nightly.keys()
    for name in once:
        assert once[name] == nightly[name], name
