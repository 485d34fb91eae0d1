"""See a run's rows in a browser: every row that entered selection, kept or dropped and why, and
every reject, served read-only by Datasette.

    python -m flows.view runs/<run>                 # http://127.0.0.1:8001
    python -m flows.view runs/<run> --port 9000 --build-only

The rows go into ``<run>/view/rows.db`` (SQLite, written by sqlite-utils) once per content: the
file is rebuilt only when the selection or a rejects file changed, so the view of a large run
starts in seconds the second time. Tables:

* ``rows``: the selection table (``selected/all.parquet``): instruction, context, response,
  source, task type, every score column, keep, dropped_by / keep_reason, dup_of, contaminated_by,
  and the generation metadata (``meta``, JSON); facets on keep, dropped_by, source and task type,
  full-text search over instruction and response, sortable by any score;
* ``rejects``: every rejects file of the run (inputs, generators, scores), its file, reason and row.

Saved queries: the rows each rule dropped (20 each) and the kept rows ranked by each score.
Datasette is a well-kept tool built for exactly this (faceted, searchable, read-only SQLite over
HTTP, with a JSON API); the database opens immutable, and the server binds to 127.0.0.1 unless
told otherwise (with a warning: the rows may be private)."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sqlite3
import sys
from pathlib import Path
from typing import Any

import polars as pl

from flows.run_folder import RunFolder
from pipelines.llm.serve import is_loopback
from pipelines.shards import atomic_write_text

VERSION = "1"  # bump when the tables change: every view is rebuilt
BATCH = 50_000
LOOPBACK = "127.0.0.1"


def _rejects_files(run: RunFolder) -> list[Path]:
    return sorted(p for p in run.root.rglob("rejects*.jsonl") if "dataset" not in p.relative_to(run.root).parts)


def content_stamp(run: RunFolder) -> str:
    """What the view is made from: the selection's and every rejects file's name, size and time."""
    h = hashlib.sha256(VERSION.encode())
    for p in [run.selected, *_rejects_files(run)]:
        if p.exists():
            st = p.stat()
            h.update(f"{p.relative_to(run.root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _row_batches(path: Path):
    """The selection table in batches, with ``task_type`` from meta and booleans as 0/1."""
    from pipelines.schema import meta_field

    scan = pl.scan_parquet(path)
    n = scan.select(pl.len()).collect().item()
    for lo in range(0, n, BATCH):
        t = scan.slice(lo, BATCH).collect()
        if "meta" in t.columns and "task_type" not in t.columns:
            t = t.with_columns(meta_field(t, "task_type").alias("task_type"))
        t = t.drop([c for c, d in t.schema.items() if d.is_nested() or d == pl.Object])  # embeddings
        yield t.with_columns(pl.col(c).cast(pl.Int8) for c, d in t.schema.items() if d == pl.Boolean)


def _reject_rows(run: RunFolder):
    for path in _rejects_files(run):
        name = str(path.relative_to(run.root))
        for i, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                rec = {"reason": "unreadable line", "raw": line[:2000]}
            rec = rec if isinstance(rec, dict) else {"raw": rec}
            yield {"file": name, "line": i, "reason": str(rec.get("reason", "")),
                   "row": rec.get("row", rec.get("record")), "field": rec.get("field"),
                   "record": json.dumps(rec, ensure_ascii=False, sort_keys=True)}


def build_view_db(run: RunFolder) -> tuple[Path, bool]:
    """``<run>/view/rows.db`` for the run's current content: (path, whether it was (re)built)."""
    import sqlite_utils

    folder = run.root / "view"
    db_path, stamp_path = folder / "rows.db", folder / "stamp.txt"
    stamp = content_stamp(run)
    if db_path.exists() and stamp_path.exists() and stamp_path.read_text() == stamp:
        return db_path, False
    if not run.selected.exists():
        raise FileNotFoundError(f"{run.selected} not found: run the select stage first")
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "rows.db.tmp"
    tmp.unlink(missing_ok=True)
    db = sqlite_utils.Database(sqlite3.connect(tmp))
    for batch in _row_batches(run.selected):
        # No primary key: exact duplicates share their content id (dedup drops all but one).
        db["rows"].insert_all(batch.iter_rows(named=True), batch_size=5000, alter=True)
    db["rows"].enable_fts(["instruction", "response"], create_triggers=False)
    for column in ("id", "keep", "dropped_by", "source", "task_type"):
        if column in db["rows"].columns_dict:
            db["rows"].create_index([column], if_not_exists=True)
    db["rejects"].insert_all(_reject_rows(run), batch_size=5000, alter=True)
    if not db["rejects"].exists():
        db["rejects"].create({"file": str, "line": int, "reason": str, "row": int, "field": str, "record": str})
    db.conn.commit()
    db.conn.close()
    tmp.replace(db_path)
    atomic_write_text(stamp_path, stamp)
    return db_path, True


def view_metadata(db_path: Path) -> dict[str, Any]:
    """Datasette's metadata: facets, sortable scores, full-text search, the saved queries."""
    con = sqlite3.connect(db_path)
    columns = [r[1] for r in con.execute("pragma table_info(rows)")]
    con.close()
    scores = [c for c in columns if c.startswith("score_")]
    shown = [c for c in ("id", "instruction", "context", "response", "source", "task_type", *scores, "keep",
                         "dropped_by", "keep_reason", "select_rank", "dup_of", "contaminated_by", "meta")
             if c in columns]
    queries = {"dropped_by_each_rule": {
        "title": "Dropped by each rule (20 examples each)",
        "sql": "select * from (select row_number() over (partition by dropped_by order by id) as n, "
               + ", ".join(shown) + " from rows where keep = 0) where n <= 20 order by dropped_by, n"}}
    for s in scores:
        queries[f"kept_by_{s}"] = {"title": f"Kept rows ranked by {s}",
                                   "sql": f"select {', '.join(shown)} from rows where keep = 1 order by {s} desc"}
    name = db_path.stem
    return {"title": "instruct-forge run", "databases": {name: {
        "tables": {"rows": {"facets": [c for c in ("keep", "dropped_by", "source", "task_type") if c in columns],
                            "sortable_columns": [c for c in columns if c != "meta"]},  # search: rows_fts
                   "rejects": {"facets": ["file", "reason"]}},
        "queries": queries}}}


def serve_command(db_path: Path, host: str, port: int) -> list[str]:
    """The datasette command: the database immutable (nothing writes it), our metadata."""
    meta = db_path.with_name("metadata.json")
    atomic_write_text(meta, json.dumps(view_metadata(db_path), indent=1))
    return [sys.executable, "-m", "datasette", "serve", "--immutable", str(db_path), "--metadata", str(meta),
            "--host", host, "--port", str(port), "--setting", "default_page_size", "50",
            "--setting", "facet_time_limit_ms", "2000", "--setting", "sql_time_limit_ms", "5000"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", help="a run folder (runs/<run>)")
    ap.add_argument("--host", default=LOOPBACK, help="interface to bind (default: this machine only)")
    ap.add_argument("--port", type=int, default=8001)
    ap.add_argument("--build-only", action="store_true", help="build view/rows.db and exit")
    args = ap.parse_args(argv)
    run = RunFolder(Path(args.run_dir))
    try:
        db_path, built = build_view_db(run)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{'built' if built else 'reused'} {db_path}", flush=True)
    if args.build_only:
        return 0
    if not is_loopback(args.host):
        print(f"warning: serving on {args.host}: anyone who reaches this machine sees the rows", file=sys.stderr)
    print(f"view: http://{args.host}:{args.port}/{db_path.stem}/rows", flush=True)
    cmd = serve_command(db_path, args.host, args.port)
    os.execv(cmd[0], cmd)  # this process becomes the server: stopping it stops the server
    return 0  # not reached (tests replace execv)


if __name__ == "__main__":
    sys.exit(main())
