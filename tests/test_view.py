"""python -m flows.view (issue 38): a run's rows and rejects in SQLite, built once per content and
served read-only by Datasette on this machine; checked through Datasette's JSON API (the browser
test, tests/test_view_browser.py, clicks through the same pages)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import polars as pl
import pytest

from flows.run_folder import RunFolder
from flows.view import build_view_db, serve_command, view_metadata
from pipelines.shards import atomic_write_jsonl

REPO = Path(__file__).resolve().parents[1]


def fake_run(root: Path) -> RunFolder:
    """A run folder with a selection table (7 rows: 3 kept, 2 dropped by top_k, 1 by near and 1 by
    exact dedup, the exact duplicate sharing its original's content id) and a collect rejects
    file: what the view reads."""
    run = RunFolder(root)
    meta = [json.dumps({"task_type": t}) for t in ("qa", "qa", "ynqa", "qa", "ynqa", "qa", "qa")]
    table = pl.DataFrame({
        "id": [f"r{i}" for i in range(6)] + ["r1"],
        "instruction": ["Why is the sea salty?", "What is a lagoon?", "Is ice lighter than water?",
                        "What is a fjord?", "Is salt water denser?", "What is a lagoon?", "What is a lagoon?"],
        "context": [""] * 7,
        "response": ["Minerals.", "A shallow lake.", "Yes.", "A sea inlet.", "Yes.", "A lake.", "A shallow lake."],
        "source": ["a.jsonl", "a.jsonl", "b.jsonl", "a.jsonl", "b.jsonl", "a.jsonl", "b.jsonl"], "meta": meta,
        "score_ifd": [0.9, 0.8, 0.7, 0.2, 0.1, None, 0.8],
        "keep": [True, True, True, False, False, False, False],
        "dropped_by": [None, None, None, "top_k(score_ifd, k=3)", "top_k(score_ifd, k=3)", "dedup.near", "dedup.exact"],
        "keep_reason": ["top_k(score_ifd, k=3)"] * 3 + [None] * 4,
        "select_rank": [1, 2, 3, None, None, None, None], "dup_of": [None] * 5 + ["r1", "r1"],
        "embedding": [[0.1, 0.2]] * 7,
    })
    run.selected.parent.mkdir(parents=True)
    table.write_parquet(run.selected)
    atomic_write_jsonl([{"file": "a.jsonl", "row": 7, "field": "output", "reason": "output is empty"}],
                       run.examples / "rejects-input-a.jsonl-1234.jsonl")
    return run


def test_the_view_database_holds_rows_rejects_and_search_and_is_rebuilt_only_on_change(tmp_path):
    import sqlite3

    run = fake_run(tmp_path / "run")
    db, built = build_view_db(run)
    assert built and build_view_db(run) == (db, False)  # unchanged content: reused as is
    con = sqlite3.connect(db)
    assert con.execute("select count(*), sum(keep) from rows").fetchone() == (7, 3)
    assert con.execute("select dropped_by, dup_of from rows where id = 'r5'").fetchone() == ("dedup.near", "r1")
    assert con.execute("select dropped_by from rows where id = 'r1' order by keep").fetchall() == [
        ("dedup.exact",), (None,)]  # an exact duplicate keeps its original's id
    assert con.execute("select task_type from rows where id = 'r2'").fetchone() == ("ynqa",)
    assert "embedding" not in [r[1] for r in con.execute("pragma table_info(rows)")]
    found = con.execute("select rows.id from rows join rows_fts on rows.rowid = rows_fts.rowid "
                        "where rows_fts match 'lagoon' order by rows.id").fetchall()
    assert found == [("r1",), ("r1",), ("r5",)]
    assert con.execute("select file, row, field, reason from rejects").fetchall() == [
        ("examples/rejects-input-a.jsonl-1234.jsonl", 7, "output", "output is empty")]
    con.close()
    with open(run.examples / "rejects-input-a.jsonl-1234.jsonl", "a") as f:
        f.write(json.dumps({"row": 9, "reason": "bad"}) + "\n")
    assert build_view_db(run)[1]  # a rejects file changed: rebuilt
    meta = view_metadata(db)["databases"]["rows"]
    assert meta["tables"]["rows"]["facets"] == ["keep", "dropped_by", "source", "task_type"]
    assert set(meta["queries"]) == {"dropped_by_each_rule", "kept_by_score_ifd"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, tries: int = 120) -> dict:
    for _ in range(tries):
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return json.loads(r.read())
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"no answer from {url}")


@pytest.mark.slow
def test_datasette_serves_facets_search_and_saved_queries_read_only(tmp_path):
    run = fake_run(tmp_path / "run")
    db, _ = build_view_db(run)
    port = _free_port()
    server = subprocess.Popen(serve_command(db, "127.0.0.1", port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}/rows"
        faceted = _get(f"{base}/rows.json?_facet=keep&_facet=dropped_by")
        keep = {r["value"]: r["count"] for r in faceted["facet_results"]["keep"]["results"]}
        assert keep == {1: 3, 0: 4}
        reasons = {r["value"] for r in faceted["facet_results"]["dropped_by"]["results"]}
        assert reasons == {"top_k(score_ifd, k=3)", "dedup.near", "dedup.exact"}
        assert _get(f"{base}/rows.json?_search=lagoon")["filtered_table_rows_count"] == 3
        by_score = _get(f"{base}/kept_by_score_ifd.json?_shape=objects")["rows"]
        assert [r["id"] for r in by_score] == ["r0", "r1", "r2"]
        dropped = _get(f"{base}/dropped_by_each_rule.json?_shape=objects")["rows"]
        assert sorted(r["id"] for r in dropped) == ["r1", "r3", "r4", "r5"]
        with pytest.raises(urllib.error.HTTPError):  # immutable: no SQL writes
            urllib.request.urlopen(f"{base}.json?sql=delete+from+rows", timeout=5)
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_the_view_warns_when_asked_to_serve_beyond_this_machine(tmp_path, monkeypatch):
    from flows import view

    run = fake_run(tmp_path / "run")
    monkeypatch.setattr(view.os, "execv", lambda path, cmd: None)
    res = subprocess.run([sys.executable, "-m", "flows.view", str(run.root), "--build-only"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "built" in res.stdout
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        assert view.main([str(run.root), "--host", "0.0.0.0"]) == 0
    assert "warning: serving on 0.0.0.0" in err.getvalue()
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        view.main([str(run.root)])
    assert "warning" not in err.getvalue()
