"""Run report: markdown with the stage counts, PNG score plots, artifact helpers.

.venv/bin/pytest tests/test_report.py -q
"""

from __future__ import annotations

import json
import struct

import polars as pl

from pipelines.report import sample_rows, score_summary, stage_markdown, write_run_report
from pipelines.schema import make_example, to_table

STAGES = [
    {
        "stage": "generate_text",
        "rows_out": 41,
        "rejects": 3,
        "seconds": 12.5,
        "counts": {"examples": 41, "rejects": 3},
    },
    {
        "stage": "collect",
        "rows_in": 41,
        "rows_out": 41,
        "rejects": 0,
        "seconds": 0.3,
        "per_source": {"generate_text": 41},
    },
    {"stage": "score", "rows_in": 41, "rows_out": 41, "seconds": 30.25, "scores": ["ifd", "color"]},
    {
        "stage": "select",
        "rows_in": 41,
        "rows_out": 17,
        "seconds": 0.4,
        "steps": [
            {"step": 1, "name": "dedup", "rows_in": 41, "rows_out": 39, "dropped": 2, "detail": ""},
            {
                "step": 2,
                "name": "top_k(score_color)",
                "rows_in": 39,
                "rows_out": 17,
                "dropped": 22,
                "detail": "",
            },
        ],
    },
]


def _selected(n: int = 41, kept: int = 17) -> pl.DataFrame:
    rows = [
        make_example(f"Question {i}? " + "x" * (300 if i == 0 else 0), f"Answer {i}.", source="bonito")
        for i in range(n)
    ]
    return to_table(rows).with_columns(
        pl.Series("score_ifd", [0.5 + (i % 7) / 10 for i in range(n)]),
        pl.Series("score_color", [None if i == 3 else float(i) for i in range(n)]),
        pl.Series("keep", [i < kept for i in range(n)]),
        pl.Series(
            "dropped_by",
            [None if i < kept else ("dedup" if i < kept + 2 else "top_k(score_color)") for i in range(n)],
        ),
    )


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_report_files_counts_and_plots(tmp_path):
    paths = write_run_report(tmp_path, STAGES, _selected())
    md = paths["markdown"].read_text()
    assert paths["markdown"] == tmp_path / "report.md"
    # Counts per stage, as given (rows in, rows out, rejects, seconds).
    assert "| generate_text |  | 41 | 3 | 12.5 |" in md
    assert "| select | 41 | 17 |  | 0.4 |" in md
    assert "Kept **17** of **41** rows." in md
    assert "| top_k(score_color) | 22 |" in md and "| dedup | 2 |" in md
    # One plot per score, linked from the markdown, each a real non-empty PNG.
    for col in ("score_ifd", "score_color"):
        png = paths[col]
        assert png == tmp_path / "report" / f"{col}.png"
        assert f"(report/{col}.png)" in md
        w, h = _png_size(png.read_bytes())
        assert w > 100 and h > 100
    assert "## Sample rows (kept)" in md and "## Sample rows (dropped)" in md


def test_report_without_selection_or_scores(tmp_path):
    table = to_table([make_example("Q?", "A.")])
    paths = write_run_report(tmp_path, STAGES[:2], table, out_name="early")
    assert set(paths) == {"markdown"} and paths["markdown"].name == "early.md"
    assert "## Sample rows" in paths["markdown"].read_text()


def test_stage_markdown_has_counts_and_details():
    md = stage_markdown(STAGES[3])
    assert md.startswith("### select")
    assert "| rows_in | 41 |" in md and "| rows_out | 17 |" in md and "| seconds | 0.4 |" in md
    assert "| 2 | top_k(score_color) | 39 | 17 | 22 |" in md
    assert "| generate_text | 41 |" in stage_markdown(STAGES[1])


def test_sample_rows_are_flat_json_scalars():
    rows = sample_rows(_selected(), n=3)
    assert len(rows) == 3
    assert rows[0]["id"] and len(rows[0]["instruction"]) == 200 and rows[0]["instruction"].endswith("…")
    assert rows[0]["keep"] is True and rows[0]["score_ifd"] == 0.5
    assert "messages" not in rows[0]
    json.dumps(rows)  # a Prefect table artifact takes JSON-able rows
    assert sample_rows(_selected().head(0)) == []


def test_score_summary_ignores_null_and_nan():
    table = pl.DataFrame(
        {"score_a": [1.0, 2.0, None, float("nan"), 3.0], "score_b": [None] * 5, "other": [1] * 5},
        schema_overrides={"score_b": pl.Float64},
    )
    a, b = score_summary(table)
    assert (a["score"], a["count"], a["mean"], a["median"], a["min"], a["max"]) == (
        "score_a",
        3,
        2.0,
        2.0,
        1.0,
        3.0,
    )
    assert b["count"] == 0 and b["mean"] is None


def test_report_shows_kept_and_dropped_per_source_and_task_type(tmp_path):
    rows = [make_example(f"Q{i}?", f"A{i}.", source="glan" if i < 6 else "bonito",
                         meta={"task_type": "qa" if i % 2 else "summarization"}) for i in range(10)]
    table = to_table(rows).with_columns(pl.Series("keep", [i < 4 for i in range(10)]))
    md = write_run_report(tmp_path, STAGES[:1], table)["markdown"].read_text()
    assert "| source | glan | 4 | 2 |" in md and "| source | bonito | 0 | 4 |" in md
    assert "| task_type | qa | 2 | 3 |" in md and "| task_type | summarization | 2 | 3 |" in md


def test_report_from_the_selection_file_reads_texts_of_sample_rows_only(tmp_path):
    """read_report_table leaves the long columns unread bar the sample rows: same report text."""
    from pipelines.report import read_report_table

    table = _selected().with_columns(pl.Series("select_rank", [41 - i for i in range(41)]))
    path = tmp_path / "all.parquet"
    table.write_parquet(path)
    light = read_report_table(path)
    assert light.height == 41 and "embedding" not in light.columns
    samples = [i for i, t in enumerate(light["instruction"].to_list()) if t is not None]
    assert samples == [12, 13, 14, 15, 16, 17, 18, 19, 20, 21]  # kept best-ranked 16..12, first 5 dropped
    full = write_run_report(tmp_path / "full", STAGES, table)["markdown"].read_text()
    assert write_run_report(tmp_path / "light", STAGES, light)["markdown"].read_text() == full.replace(
        "full", "light"
    )


def test_selection_composition_reads_task_types_from_meta_text_or_dicts():
    from pipelines.report import selection_composition

    metas = ['{"task_type": "qa", "n": 1}', '{"task_type": "qa"}', "{}", '{"task_type": "summary"}']
    text = pl.DataFrame({"keep": [True, False, True, True], "meta": metas})
    want = [{"by": "task_type", "value": "qa", "kept": 1, "dropped": 1},
            {"by": "task_type", "value": "(none)", "kept": 1, "dropped": 0},
            {"by": "task_type", "value": "summary", "kept": 1, "dropped": 0}]
    assert selection_composition(text) == want
    as_dicts = text.with_columns(pl.Series("meta", [json.loads(m) for m in metas], dtype=pl.Object))
    assert selection_composition(as_dicts) == want
