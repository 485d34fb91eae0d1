"""Run report: what each stage did, how the scores are distributed, what selection kept.

    from pipelines.report import write_run_report
    paths = write_run_report(run_dir, stage_records, selected_table)
    # run_dir/report.md, run_dir/report/score_<name>.png (kept vs dropped histograms)

``stage_records``: the dicts the stages of ``flows/stages/`` return (stage, rows_in, rows_out,
rejects, seconds, ...); ``table``: the selected table (with ``keep`` / ``dropped_by``).

The flow publishes the same content as Prefect artifacts: ``stage_markdown(record)`` for
``create_markdown_artifact`` and ``sample_rows(table)`` for ``create_table_artifact``. Prefect is
not imported here, so all of this runs (and is tested) without it. Plots use matplotlib's Agg
backend: no display needed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from pipelines.schema import TEXT_COLUMNS
from pipelines.shards import atomic_write_bytes, atomic_write_text, read_short_columns

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
SUMMARY_FIELDS = ("count", "mean", "std", "min", "q10", "q25", "median", "q75", "q90", "max")
# Columns worth showing first in sample rows; long text is cut so artifacts stay readable.
SAMPLE_ROWS = 5
SAMPLE_FIRST = ("id", "instruction", "context", "response", "source", "keep", "dropped_by", "keep_reason")
SAMPLE_TEXT_CHARS = 200


def score_columns(table: pl.DataFrame) -> list[str]:
    """The numeric ``score_*`` columns, in table order."""
    return [c for c, t in table.schema.items() if c.startswith("score_") and t.is_numeric()]


def _finite(series: pl.Series) -> pl.Series:
    s = series.cast(pl.Float64).drop_nulls()
    return s.filter(s.is_finite())


def score_summary(table: pl.DataFrame) -> list[dict[str, Any]]:
    """Per score column: count of finite values, mean, std, min, quantiles, max (None when empty)."""
    out = []
    for col in score_columns(table):
        s = _finite(table[col])
        row: dict[str, Any] = {"score": col, "count": s.len()}
        if s.len():
            row.update(mean=s.mean(), std=s.std() if s.len() > 1 else 0.0, min=s.min(), max=s.max())
            for q, name in zip(QUANTILES, ("q10", "q25", "median", "q75", "q90"), strict=True):
                row[name] = s.quantile(q, interpolation="linear")
        else:
            row.update({k: None for k in SUMMARY_FIELDS[1:]})
        out.append({k: row.get(k) for k in ("score", *SUMMARY_FIELDS)})
    return out


def fmt(value: Any) -> str:
    """A table cell: 4 significant digits for floats, '' for None, pipes escaped."""
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A GitHub markdown table of ``rows`` (dicts); columns default to the first row's keys."""
    if not rows:
        return "_(none)_\n"
    columns = list(columns or rows[0].keys())
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


STAGE_COUNT_FIELDS = ("rows_in", "rows_out", "rejects", "seconds")


def stage_counts_table(stages: Sequence[Mapping[str, Any]], with_seconds: bool = True) -> str:
    """One line per stage: rows in, rows out, rejects (and seconds)."""
    fields = STAGE_COUNT_FIELDS if with_seconds else STAGE_COUNT_FIELDS[:-1]
    rows = [{"stage": s.get("stage", "?"), **{f: s.get(f) for f in fields}} for s in stages]
    return markdown_table(rows, ["stage", *fields])


def usage_section(stages: Sequence[Mapping[str, Any]], title: str = "## Model usage",
                  with_seconds: bool = True) -> list[str]:
    """Tokens, calls, retries, failures and seconds per stage and backend, with totals (and cost
    when the model is priced: model.price_per_million); nothing when no stage called a model."""
    from pipelines.llm.usage import USAGE_COLUMNS, usage_rows

    rows = usage_rows(stages)
    if not rows:
        return []
    columns = ["stage", "backend", *(c for c in USAGE_COLUMNS if with_seconds or c != "seconds")]
    if any(r["cost"] is not None for r in rows):
        columns.append("cost")
    return [title, "", markdown_table(rows, columns)]


def decontamination_section(stages: Sequence[Mapping[str, Any]]) -> list[str]:
    """Which eval sets the rows were checked against and how many were contaminated (any stage's record)."""
    d = next((s["decontamination"] for s in stages if s.get("decontamination")), None)
    if not d:
        return []
    per = d.get("per_eval_set", {})
    rows = [{"eval set": name, "distinct n-grams": size, "rows contaminated": per.get(name, 0)}
            for name, size in d.get("eval_ngrams", {}).items()]
    return ["## Decontamination", "",
            f"{d.get('rows', 0)} rows shared a word {d.get('n')}-gram with an eval set and were dropped "
            "(`contaminated_by`, step `decontaminate`).", "", markdown_table(rows)]


def stage_markdown(stage: Mapping[str, Any]) -> str:
    """One stage record as markdown: the counts, then any nested details (dicts, step lists)."""
    name = stage.get("stage", "stage")
    lines = [f"### {name}", ""]
    counts = [(k, stage[k]) for k in STAGE_COUNT_FIELDS if k in stage]
    lines.append(markdown_table([{"metric": k, "value": v} for k, v in counts]))
    for key, value in stage.items():
        if key == "stage" or key in STAGE_COUNT_FIELDS or value is None:
            continue
        if isinstance(value, Mapping):
            lines += [
                f"**{key}**",
                "",
                markdown_table([{"key": k, "value": _cell(v)} for k, v in value.items()]),
            ]
        elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            lines += [f"**{key}**", "", markdown_table(value)]
        else:
            lines.append(f"- **{key}**: {fmt(_cell(value))}")
    return "\n".join(lines).rstrip() + "\n"


def _cell(value: Any) -> Any:
    return json.dumps(value, sort_keys=True, default=str) if isinstance(value, (list, dict)) else value


def _scalar(value: Any) -> Any:
    """A JSON-able scalar for a table artifact: nested values as JSON, long text cut, NaN as None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, (list, dict)):
        value = json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    if isinstance(value, str) and len(value) > SAMPLE_TEXT_CHARS:
        return value[: SAMPLE_TEXT_CHARS - 1] + "…"
    return value


def sample_parts(table: pl.DataFrame) -> list[tuple[str, pl.DataFrame]]:
    """The report's sample sections, (label, rows): kept rows best-ranked first, then dropped rows
    (one unlabelled section for a table that was not selected)."""
    if "keep" not in table.columns:
        return [("", table)]
    kept_rows = table.filter(pl.col("keep"))
    if "select_rank" in table.columns:
        kept_rows = kept_rows.sort("select_rank", nulls_last=True)
    return [("kept", kept_rows), ("dropped", table.filter(~pl.col("keep")))]


def read_report_table(selected_path: str | Path, n: int = SAMPLE_ROWS) -> pl.DataFrame:
    """The selection table as the report reads it: every column but the long ones, whose texts
    only the sample rows carry (read back by id), so a million-row run does not load its texts."""
    table = read_short_columns(selected_path)
    names = list(pl.read_parquet_schema(selected_path))
    texts = [c for c in TEXT_COLUMNS if c in names and c in SAMPLE_FIRST]
    if "id" not in names or not texts:
        return table
    ids = [i for _, part in sample_parts(table) for i in part["id"].head(n).to_list()]
    found = pl.scan_parquet(selected_path).filter(pl.col("id").is_in(ids)).select(["id", *texts]).unique("id", keep="first").collect()
    return table.with_columns(
        pl.col("id").replace_strict(found["id"], found[c], default=None, return_dtype=pl.Utf8).alias(c)
        for c in texts
    )


def sample_rows(table: pl.DataFrame, n: int = SAMPLE_ROWS) -> list[dict[str, Any]]:
    """The first ``n`` rows as flat dicts (text cut, scores rounded, no ``messages``)."""
    cols = [c for c in SAMPLE_FIRST if c in table.columns]
    cols += score_columns(table) + [c for c in ("meta",) if c in table.columns]
    return [{k: _scalar(v) for k, v in row.items()} for row in table.select(cols).head(n).to_dicts()]


def plot_score(table: pl.DataFrame, column: str, path: Path) -> Path:
    """Histogram of one score, kept and dropped rows overlaid (all rows when there is no ``keep``)."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and workers
    import io

    import matplotlib.pyplot as plt

    scores = table[column]
    groups = {"all rows": scores}
    if "keep" in table.columns:  # numpy arrays of the one column: no copy of the table, no Python floats
        groups = {"kept": scores.filter(table["keep"]), "dropped": scores.filter(~table["keep"])}
    values = {k: _finite(s).to_numpy() for k, s in groups.items()}
    drawn = [v for v in values.values() if v.size]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    if drawn:
        # Shared bin edges so the two histograms compare bar for bar.
        lo, hi = min(float(v.min()) for v in drawn), max(float(v.max()) for v in drawn)
        bins = [lo + (hi - lo) * i / 30 for i in range(31)] if hi > lo else 10
        for (label, vs), color in zip(values.items(), ("tab:green", "tab:red"), strict=False):
            if vs.size:
                ax.hist(vs, bins=bins, alpha=0.55, color=color, label=f"{label} ({vs.size})")
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no finite values", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(column)
    ax.set_xlabel("score")
    ax.set_ylabel("rows")
    fig.tight_layout()
    buf = io.BytesIO()
    # No Software/date metadata: the same data draws the same bytes.
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def selection_composition(table: pl.DataFrame) -> list[dict[str, Any]]:
    """Rows kept and dropped per source and per task type: what a target-aware selection favoured."""
    if "keep" not in table.columns or table.is_empty():
        return []
    from pipelines.schema import meta_field

    keys = {"source": table["source"]} if "source" in table.columns else {}
    if "meta" in table.columns:  # JSON text: read in polars, not as one Python dict per row
        meta = table["meta"]
        keys["task_type"] = (meta.str.json_path_match("$.task_type") if meta.dtype == pl.Utf8
                             else meta_field(table, "task_type"))
    out = []
    for group, values in keys.items():
        counts = (
            pl.DataFrame({"value": values.fill_null("(none)"), "keep": table["keep"]})
            .group_by("value")
            .agg(kept=pl.col("keep").sum(), dropped=(~pl.col("keep")).sum())
            .sort(["kept", "dropped", "value"], descending=[True, True, False])
        )
        out += [{"by": group, **r} for r in counts.to_dicts()]
    return out


def stage_notes(stage: Mapping[str, Any]) -> list[str]:
    """A stage's ``notes`` (what it cut or left out, with counts), at the top of its record or in
    its ``counts`` (the generators')."""
    counts = stage.get("counts")
    nested = counts.get("notes") if isinstance(counts, Mapping) else None
    return [str(n) for n in (stage.get("notes") or []) + (nested or [])]


def losses_section(stages: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per thing a stage cut, dropped or left null, with its count: nothing silently."""
    lines = [f"- **{s.get('stage', '?')}**: {note}" for s in stages for note in stage_notes(s)]
    return ["## Cut or left out", "", *lines, ""] if lines else []


def comparison_section(stages: Sequence[Mapping[str, Any]]) -> list[str]:
    """The arms table of the record that compared arms (pipelines.finetune.compare), selection_gain line."""
    cmp = next((s["comparison"] for s in stages if s.get("comparison")), None)
    return comparison_lines(cmp) if cmp else []


def comparison_lines(cmp: Mapping[str, Any]) -> list[str]:
    """A comparison (pipelines.finetune.compare) as markdown: heading, table, selection_gain line."""
    from pipelines.finetune.compare import gain_line

    return ["## Does the selection beat random?", "",
            "Held-out loss (lower is better) after the same training on each arm's rows: base is the "
            "untrained model, random draws as many rows as selected from the candidates it chose from.", "",
            markdown_table(cmp["rows"], cmp["columns"]), f"`{gain_line(cmp.get('selection_gain'))}`", ""]


def _selection_section(table: pl.DataFrame) -> list[str]:
    if "keep" not in table.columns:
        return []
    kept = int(table["keep"].sum())
    lines = ["## Selection", "", f"Kept **{kept}** of **{table.height}** rows.", ""]
    if "dropped_by" in table.columns and kept < table.height:
        by = (
            table.filter(~pl.col("keep"))
            .group_by("dropped_by")
            .len()
            .sort(["len", "dropped_by"], descending=[True, False])
        )
        rows = [{"dropped by": r["dropped_by"], "rows": r["len"]} for r in by.to_dicts()]
        lines += [markdown_table(rows)]
    composition = selection_composition(table)
    if composition:
        lines += ["Kept and dropped rows per source and task type:", "",
                  markdown_table(composition, ["by", "value", "kept", "dropped"])]
    return lines


def write_run_report(
    run_dir: str | Path,
    stages: Sequence[Mapping[str, Any]],
    table: pl.DataFrame,
    out_name: str = "report",
    lead: Sequence[str] = (),
) -> dict[str, Path]:
    """Write ``<run_dir>/<out_name>.md`` and one PNG per score in ``<run_dir>/<out_name>/``;
    ``lead``: markdown lines that open it (the run's verdict on its selection).

    Returns {"markdown": path, "<score column>": png path, ...}.
    """
    run_dir = Path(run_dir)
    plot_dir = run_dir / out_name
    paths: dict[str, Path] = {}
    total = sum(float(s.get("seconds") or 0) for s in stages)
    lines = [
        f"# Run report: {run_dir.name}",
        "",
        f"Run folder: `{run_dir.name}`  ",  # the report is shared with its folder: no user path
        f"Stage time: {total:.1f} s",
        "",
        *lead,
    ]
    lines += ["## Stages", "", stage_counts_table(stages)]
    lines += comparison_section(stages)
    lines += losses_section(stages)
    lines += usage_section(stages)
    lines += decontamination_section(stages)
    lines += _selection_section(table)

    summary = score_summary(table)
    if summary:
        lines += ["## Scores", "", "All rows entering selection:", "", markdown_table(summary)]
        for col in score_columns(table):
            png = plot_score(table, col, plot_dir / f"{col}.png")
            paths[col] = png
            lines += [f"![{col}]({out_name}/{png.name})", ""]

    for label, part in sample_parts(table):
        lines += [f"## Sample rows{f' ({label})' if label else ''}", "", markdown_table(sample_rows(part))]

    lines += ["## Stage details", ""] + [stage_markdown(s) for s in stages]
    md = run_dir / f"{out_name}.md"
    atomic_write_text(md, "\n".join(lines).rstrip() + "\n")
    return {"markdown": md, **paths}
