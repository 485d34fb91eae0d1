"""One table that says whether a selection beat random picks of the same size (no torch here).

    from pipelines.finetune.compare import comparison, gain_line, comparison_text
    cmp = comparison({"selected": metrics, "random-s0": m0, "random-s1": m1})
    cmp["rows"]                    # base, selected, random (mean, min-max over seeds), whole
    gain_line(cmp["selection_gain"])
    # selection_gain=0.0312 (random mean 2.41 - selected 2.379; seeds' spread 0.009, 3 seeds): selected beat random by more than the seeds' spread

``arms`` maps an arm name to the metrics of its training run (pipelines.finetune.run_training):
``selected`` (its ``*_before`` metrics give the base row), ``random-s<k>`` (one per seed), and
``whole`` when asked. Losses are held-out mean NLL per response token: lower is better.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

BEAT = "selected beat random by more than the seeds' spread"
NOISE = "within noise"
WORSE = "worse than random"
METRICS = (("held-out loss", "eval_loss"), ("exact match", "exact_match"), ("f1", "f1"))


def random_arms(arms: Mapping[str, Any]) -> list[str]:
    return sorted(a for a in arms if a.startswith("random"))


def selection_gain(selected_loss: float, random_losses: Sequence[float]) -> dict[str, Any] | None:
    """Random mean loss minus the selected loss (> 0: the selection helped), the seeds' spread
    (max - min of the random losses) and the verdict: beat (gain > spread), worse (gain < -spread)
    or within noise. One seed measures no spread: the verdict then says so."""
    if not random_losses or selected_loss is None:
        return None
    mean = sum(random_losses) / len(random_losses)
    spread = max(random_losses) - min(random_losses)
    gain = mean - selected_loss
    verdict = BEAT if gain > spread else WORSE if gain < -spread else NOISE
    return {"selection_gain": gain, "random_mean": mean, "selected": selected_loss, "spread": spread,
            "seeds": len(random_losses), "verdict": verdict}


def _row(name: str, metrics: Mapping[str, Any], suffix: str = "") -> dict[str, Any]:
    row: dict[str, Any] = {"arm": name, "rows": metrics.get("rows")}
    row.update({col: metrics.get(key + suffix) for col, key in METRICS})
    return row


def comparison(arms: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """{"rows": the table's rows, "columns": the columns worth showing, "selection_gain": ... or None}."""
    rows: list[dict[str, Any]] = []
    selected = arms.get("selected") or {}
    if selected.get("eval_loss_before") is not None:
        rows.append({**_row("base (untrained)", selected, "_before"), "rows": 0})
    if selected:
        rows.append(_row("selected", selected))
    seeds = [arms[a] for a in random_arms(arms)]
    losses = [m["eval_loss"] for m in seeds if m.get("eval_loss") is not None]
    if seeds:
        row = {"arm": f"random ({len(seeds)} seed{'s' if len(seeds) > 1 else ''})", "rows": seeds[0].get("rows")}
        for col, key in METRICS:
            values = [m[key] for m in seeds if m.get(key) is not None]
            row[col] = sum(values) / len(values) if values else None
        row["loss min-max"] = f"{min(losses):.4g}-{max(losses):.4g}" if losses else None
        rows.append(row)
    if "whole" in arms:
        rows.append(_row("whole (every candidate)", arms["whole"]))
    if "general" in arms:
        rows.append(_row("general (train.general_path)", arms["general"]))
    columns = ["arm", "rows", "held-out loss"]
    if seeds:
        columns.append("loss min-max")
    columns += [c for c in ("exact match", "f1") if any(r.get(c) is not None for r in rows)]
    return {"rows": rows, "columns": columns,
            "selection_gain": selection_gain(selected.get("eval_loss"), losses) if selected else None}


def gain_line(gain: Mapping[str, Any] | None) -> str:
    """The one line a user greps for: ``selection_gain=<random mean - selected>`` and the verdict."""
    if not gain:
        return "selection_gain=n/a (no random arm: train.compare=[])"
    one = " (one seed measures no spread: set train.compare_seeds=3 or more to trust it)" if gain["seeds"] < 2 else ""
    return (f"selection_gain={gain['selection_gain']:.4g} (random mean {gain['random_mean']:.4g} - selected "
            f"{gain['selected']:.4g}; seeds' spread {gain['spread']:.4g}, {gain['seeds']} seed"
            f"{'s' if gain['seeds'] > 1 else ''}): {gain['verdict']}{one}")


def _cell(v: Any) -> str:
    return "" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)


def table_text(columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Rows as plain aligned lines under a header: the first column left, the others right."""
    cells = [list(columns)] + [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return ["  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths, strict=True)))
            for row in cells]


def comparison_text(cmp: Mapping[str, Any]) -> str:
    """The table as plain aligned text, then the gain line (the end-of-run summary)."""
    return "\n".join([*table_text(cmp["columns"], cmp["rows"]), gain_line(cmp.get("selection_gain"))])


def choose_ranking(losses: Mapping[str, float], random_losses: Sequence[float], default: str,
                   random: str | None = None) -> dict[str, Any]:
    """select.auto's rule: the candidate with the lowest held-out loss is kept only when it beats
    every other candidate by more than the random arms' spread (max - min over seeds), else the
    ``default`` is. With ``random`` named, random picks (their mean) are a candidate under that
    name too: a ranking that loses to picking at random by more than the noise is not shipped.
    Returns the choice with the figures behind it and a one-line reason."""
    spread = max(random_losses) - min(random_losses)
    mean = sum(random_losses) / len(random_losses)
    losses = {**losses, **({random: mean} if random else {})}
    best = min(losses, key=lambda c: (losses[c], c != default))  # a tie goes to the default
    runner_up = min((c for c in losses if c != best), key=losses.get, default=None)
    margin = losses[runner_up] - losses[best] if runner_up else float("inf")
    if best == default:
        kept, reason = default, f"{default} had the lowest loss"
    elif margin > spread:
        kept, reason = best, (f"{best} beat the next best ({runner_up}) by {margin:.4g}, more than the random "
                              f"arms' spread {spread:.4g}")
    else:
        kept, reason = default, (f"{best} led {runner_up} by {margin:.4g}, within the random arms' spread "
                                 f"{spread:.4g}: {default} kept")
    if kept != random and losses[kept] >= mean:
        reason += f"; note: it did not beat the random mean {mean:.4g}"
    return {"kept": kept, "best": best, "margin": margin, "spread": spread, "random_mean": mean, "reason": reason}


def choice_text(rows: Sequence[Mapping[str, Any]], choice: Mapping[str, Any]) -> str:
    """The choose stage's table (arm, rows, proxy loss) and its decision, as printed at the end of a run."""
    return "\n".join([*table_text(("arm", "rows", "proxy loss", "loss min-max"), rows),
                      f"ranking kept: {choice['kept']} ({choice['reason']})"])
