"""The dataset card's prose (no YAML header: ``push_to_hub`` writes that) and its score plots.

    check_card_info(card_info)                                  # unknown keys are an error
    plots = write_plots(selected, out)                          # plots/<score>.png, kept vs dropped
    text = dataset_card_text(rows, card_info, selected, plots, splits={"train": 90, "test": 10})
    text = with_comparison(text, comparison)                    # the train stage's arms table, added later

The card reads the exported rows' column names, count, sources, scores and meta: never the texts,
so a streamed export passes the rows without their long columns.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl

from pipelines.redact import redact_config, redact_text
from pipelines.report import (
    comparison_lines,
    decontamination_section,
    markdown_table,
    plot_score,
    score_columns,
    score_summary,
    selection_composition,
    stage_counts_table,
    usage_section,
)
from pipelines.shards import SHARD_GLOB

CARD_KEYS = {"title", "description", "generators", "models", "config", "stages", "fingerprint", "scores"}


def check_card_info(card_info: Mapping[str, Any]) -> None:
    """Unknown keys are an error, so a typo does not silently drop provenance."""
    unknown = set(card_info) - CARD_KEYS
    if unknown:
        raise ValueError(f"unknown card_info keys {sorted(unknown)}; expected some of {sorted(CARD_KEYS)}")


def write_plots(selected: pl.DataFrame | None, out: Path) -> dict[str, str]:
    """Kept-vs-dropped histograms of each score of ``selected`` (when it has ``keep``):
    score column -> ``plots/<score>.png`` (relative to ``out``)."""
    if selected is None or "keep" not in selected.columns:
        return {}
    return {c: plot_score(selected, c, out / "plots" / f"{c}.png").relative_to(out).as_posix()
            for c in score_columns(selected)}


def _config_text(config: Any) -> tuple[str, str]:
    """(code-fence language, text) of the run configuration."""
    if isinstance(config, str):
        return ("toml" if re.search(r"^\s*\[", config, re.M) else "yaml"), redact_text(config.strip())
    import yaml

    return "yaml", yaml.safe_dump(redact_config(config), sort_keys=False, allow_unicode=True).strip()


def _generators(rows: pl.DataFrame, info: Mapping[str, Any]) -> str:
    """The generators' settings (when given) and the rows per ``source``."""
    given, text = info.get("generators"), ""
    if isinstance(given, Mapping):
        text = markdown_table([{"generator": k, "settings": _short(v)} for k, v in given.items()]) + "\n"
    elif given:
        text = "".join(f"- {g}\n" for g in given) + "\n"
    if "source" not in rows.columns or rows.height == 0:
        return text or "_(not recorded)_\n"
    # The source column names the generator and its parameters for every row.
    counts = rows.group_by("source").len().sort(["len", "source"], descending=[True, False])
    return text + "Rows per source:\n\n" + markdown_table(
        [{"source": r["source"] or "(empty)", "rows": r["len"]} for r in counts.head(20).to_dicts()]
    )


def _short(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def _selection_card(selected: pl.DataFrame, plots: Mapping[str, str]) -> list[str]:
    kept = int(selected["keep"].sum())
    lines = ["## What selection kept", "", f"{kept} of {selected.height} rows kept.", ""]
    composition = selection_composition(selected)
    if composition:
        lines += ["Kept and dropped rows per source and task type:", "",
                  markdown_table(composition, ["by", "value", "kept", "dropped"])]
    for column, png in plots.items():
        lines += [f"![{column}, kept vs dropped]({png})", ""]
    return lines


def usage_card(stages: list[Mapping[str, Any]]) -> list[str]:
    """The card's token section: model tokens, calls, retries and failures per stage and in
    total (cost when model.price_per_million is set), from the stage records' ``usage``. No
    seconds: the card depends on what was made, not on how long it took. The tokens are what the
    run spent, attempts cut short by a crash included, so after a resumed crash this section (and
    only this one) differs from an undisturbed run's card."""
    return usage_section(stages, title="## Model tokens used", with_seconds=False)


def dataset_card_text(
    rows: pl.DataFrame,
    info: Mapping[str, Any],
    selected: pl.DataFrame | None = None,
    plots: Mapping[str, str] | None = None,
    splits: Mapping[str, int] | None = None,
) -> str:
    """The card's prose: what the data is, its splits, how it was made (models per stage, generator
    settings, score definitions, counts per stage and per selection step), what selection kept
    (when ``selected`` is given), score summary, config.

    Deterministic in (rows, info): stage timings are left out (they belong to the run report).
    """
    title = info.get("title") or "Instruction-tuning dataset"
    lines = [f"# {title}", ""]
    if info.get("description"):
        lines += [str(info["description"]).strip(), ""]
    cols = ", ".join(f"`{c}`" for c in rows.columns)
    notes = [
        "`messages` is the chat form of each row (TRL's conversational format: a user turn with "
        "the instruction and its context, then the assistant's response)"
    ]
    if "meta" in rows.columns:
        notes.append("`meta` is a JSON object stored as a string")
    if any(c.startswith("score_") for c in rows.columns):
        notes.append("`score_*` columns are the selection scores")
    if "keep" in rows.columns:
        notes.append("`keep` and the reason columns record what selection decided")
    lines += [
        f"{rows.height} examples. Columns: {cols}.",
        "",
        "; ".join(notes) + ".",
        "",
        "## Files",
        "",
        f"- `parquet/{SHARD_GLOB}`: the rows in Parquet shards",
        "- `data.jsonl`: the same rows as JSON lines",
        '- `hf/`: `datasets.load_from_disk("hf")`',
        "",
    ]
    if splits:
        lines[-1:] = [
            "- `test/`: the held-out split, in the same three forms (the files above are the train split)",
            "",
            "## Splits",
            "",
            markdown_table([{"split": k, "rows": v} for k, v in splits.items()]),
            "A seeded split on the row ids (`export.test_fraction`, `run.seed`): a rerun splits the same way.",
            "",
        ]
    lines += ["## How it was made", "", "Generators:", "", _generators(rows, info)]
    models = info.get("models")
    if models:
        lines += ["Models, per stage:", ""]
        items = models.items() if isinstance(models, Mapping) else ((None, m) for m in models)
        lines += [f"- {k}: `{v}`" if k else f"- `{v}`" for k, v in items] + [""]
    if info.get("fingerprint"):
        lines += [f"Config fingerprint: `{info['fingerprint']}`", ""]
    if info.get("scores"):
        lines += ["Scores:", "", markdown_table([{"column": f"`{k}`", "definition": v}
                                                 for k, v in info["scores"].items()])]
    stages = info.get("stages") or []
    if stages:
        lines += ["## Counts per stage", "", stage_counts_table(stages, with_seconds=False)]
        for stage in stages:
            if stage.get("steps") and all("rows_in" in step for step in stage["steps"]):  # per-step counts
                cols_ = ["step", "name", "rows_in", "rows_out", "dropped", "detail"]
                lines += ["Selection steps:", "", markdown_table(stage["steps"], cols_)]
        lines += usage_card(stages)
        lines += decontamination_section(stages)
    if selected is not None and "keep" in selected.columns:
        lines += _selection_card(selected, plots or {})
    summary = score_summary(rows)
    if summary:
        lines += [
            "## Score summary",
            "",
            "Over the exported rows (count = finite values):",
            "",
            markdown_table(summary),
        ]
    if info.get("config") is not None:
        lang, text = _config_text(info["config"])
        lines += ["## Configuration", "", f"```{lang}", text, "```", ""]
    return redact_text("\n".join(lines).rstrip() + "\n")  # an endpoint URL anywhere: no credentials


COMPARISON_START, COMPARISON_END = "<!-- train-comparison -->", "<!-- /train-comparison -->"
_COMPARISON_BLOCK = re.compile(re.escape(COMPARISON_START) + ".*?" + re.escape(COMPARISON_END) + "\n\n?", re.S)


def with_comparison(card: str, cmp: Mapping[str, Any] | None) -> str:
    """The card with the train stage's selected-vs-random table (pipelines.finetune.compare) in
    place of any earlier one, before the configuration; ``cmp`` None removes it. The export writes
    the card before training, so the train stage adds this; applying it twice changes nothing."""
    card = _COMPARISON_BLOCK.sub("", card)
    if not cmp:
        return card
    block = "\n".join([COMPARISON_START, *comparison_lines(cmp), COMPARISON_END]) + "\n\n"
    at = card.find("## Configuration\n")
    at = len(card) if at < 0 else at
    return redact_text(card[:at] + block + card[at:])
