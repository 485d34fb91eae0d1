"""The first thing a run's report says: which ranking it kept after grading it on held-out target
rows (the choose stage: the guard, or select.auto), and whether training on the pick beat the
untrained model at all."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pipelines.report import markdown_table


def selection_verdict(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """Markdown lines for the top of the report; none when no choose stage ran."""
    rec = next((r for r in records if r.get("stage") == "choose" and r.get("choice")), None)
    if rec is None:
        return []
    choice, rows = rec["choice"], {r["arm"].split(" (=")[0]: r for r in rec.get("table", [])}
    kept = choice["kept"]
    lines = [f"**Selection kept: {kept}** ({choice['reason']}; graded on {rec['graded_on']['rows']} held-out "
             "target rows by short proxy fine-tunes)."]
    base = rows.get("base (untrained)")
    mine = rows.get(kept) or next((r for arm, r in rows.items() if arm.startswith(f"{kept} (")), None)  # random (3 seeds)
    if base and mine:
        helped = mine["proxy loss"] < base["proxy loss"]
        lines.append(f"Training on it {'beat' if helped else 'did not beat'} the untrained model: proxy loss "
                     f"{mine['proxy loss']:.4g} against {base['proxy loss']:.4g}"
                     + ("." if helped else ": the model may be better off without this data."))
    return [" ".join(lines), ""]


def choice_section(stages: Sequence[Mapping[str, Any]]) -> list[str]:
    """The choose stage's table (select.auto: each ranking's proxy fine-tune) and what it kept."""
    rec = next((s for s in stages if s.get("stage") == "choose" and s.get("choice")), None)
    if rec is None:
        return []
    return ["## Which ranking? (select.auto)", "",
            f"Proxy loss on {rec['graded_on']['rows']} held-out target rows the train stage does not evaluate on, after a short "
            "fine-tune on each ranking's picks (lower is better). A ranking other than the default, or random "
            "picks, are kept only when they beat every other one by more than the random arms' spread.", "",
            markdown_table(rec["table"], ["arm", "rows", "proxy loss", "loss min-max"]),
            f"Kept: **{rec['choice']['kept']}** ({rec['choice']['reason']}).", ""]
