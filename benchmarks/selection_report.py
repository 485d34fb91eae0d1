"""benchmarks.selection's report: per target random 10% mean +- standard error and each arm's distance
from it in standard errors; per target set (tuning, confirmation) and arm how many targets it beats
random by > 2 SE and how many it is > 1 SE worse on; then the worst-case ratio lines over the
confirmation targets (the tuning ones when none ran), ``default_vs_random10=`` last.

The SE is the random arm's seed-to-seed standard error of the mean (sample std / sqrt(seeds)): the
noise of the reference. A ranked arm is one fine-tune (seed 0), so "> 2 SE" is a screen, not a test.
"""

from __future__ import annotations

import numpy as np
import polars as pl

RATIO_KEYS = ("color_vs_random30", "target_sim_vs_random10", "color_vs_random10", "otd_vs_random10",
              "otd_vs_target_sim", "default_vs_longest", "default_vs_random10")  # in this order; the last is the verdict


def random_stats(losses) -> tuple[float, float]:
    """(mean, standard error of the mean) of the random seeds' losses; SE is NaN for one seed."""
    x = np.asarray(list(losses), dtype=np.float64)
    se = float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else float("nan")
    return float(x.mean()), se


def _is_random(arm: str, family: str) -> bool:
    return arm.startswith(f"{family}_s")


def variant_summary(res: pl.DataFrame, family: str) -> dict[str, dict]:
    """Per arm (not the ``family`` seeds, not ``base``): over targets, how many it beats the random
    mean by more than 2 SE (``beats_2se``), how many it is worse by more than 1 SE (``worse_1se``),
    and its worst loss ratio to the random mean (``max_ratio``)."""
    out: dict[str, dict] = {}
    for name in res["target"].unique(maintain_order=True).to_list():
        part = res.filter(pl.col("target") == name)
        seeds = part.filter(pl.col("arm").str.starts_with(f"{family}_s"))["eval_loss"]
        if not seeds.len():  # --arms without the random family: nothing to compare against
            continue
        mean, se = random_stats(seeds)
        for arm, loss in part.select("arm", "eval_loss").iter_rows():
            if _is_random(arm, family) or arm == "base":
                continue
            row = out.setdefault(arm, {"beats_2se": 0, "worse_1se": 0, "targets": 0, "max_ratio": -np.inf})
            row["targets"] += 1
            row["beats_2se"] += int(bool(loss < mean - 2 * se))
            row["worse_1se"] += int(bool(loss > mean + se))
            row["max_ratio"] = max(row["max_ratio"], loss / mean)
    return out


def summarise(res: pl.DataFrame, fraction: float, big_fraction: float) -> dict[str, float]:
    """Print one line per target (random mean +- SE, the default's distance in SE, the ratios);
    return the worst case over targets of each ratio."""
    small, big = round(fraction * 100), round(big_fraction * 100)
    nan = float("nan")  # an arm left out with --arms
    worst: dict[str, float] = {}
    for name in res["target"].unique(maintain_order=True).to_list():
        part = res.filter(pl.col("target") == name)
        loss = dict(zip(part["arm"].to_list(), part["eval_loss"].to_list(), strict=True))
        rnd = part.filter(pl.col("arm").str.starts_with(f"random{small}_s"))["eval_loss"]
        ref10, se = random_stats(rnd) if rnd.len() else (nan, nan)
        ref30 = loss.get(f"random{big}_s0", nan)
        ratios = {
            "color_vs_random30": loss.get("color", nan) / ref30,
            "target_sim_vs_random10": loss.get("target_sim", nan) / ref10,
            "color_vs_random10": loss.get("color", nan) / ref10,
            "otd_vs_random10": loss.get("otd", nan) / ref10,
            "otd_vs_target_sim": loss.get("otd", nan) / loss.get("target_sim", nan),
            "default_vs_longest": loss.get("default", nan) / loss.get("longest", nan),
            "default_vs_random10": loss.get("default", nan) / ref10,
        }
        dist = (loss.get("default", nan) - ref10) / se if se and se > 0 else nan
        vs_longest = (loss.get("default", nan) - loss.get("longest", nan)) / se if se and se > 0 else nan
        moved = (loss.get("base", nan) - ref10) / se if se and se > 0 else nan  # is --steps enough?
        print(f"{name}: random{small} mean={ref10:.4f} +- {se:.4f} SE over {rnd.len()} seeds "
              f"(min {rnd.min() if rnd.len() else nan:.4f}, max {rnd.max() if rnd.len() else nan:.4f}); "
              f"training moved it {moved:.1f} SE from base; "
              f"default={loss.get('default', nan):.4f} ({dist:+.1f} SE); "
              f"longest={loss.get('longest', nan):.4f} (default {vs_longest:+.1f} SE from it); "
              + " ".join(f"{k}={v:.4f}" for k, v in ratios.items()))
        for k, v in ratios.items():
            worst[k] = max(worst.get(k, -np.inf), v) if not np.isnan(v) else worst.get(k, v)
    return worst


def auto_check(res: pl.DataFrame, family: str) -> int:
    """Per target, select.auto's rule on the ``choose_loss`` column (the grading rows) against the
    held-out loss of the other rows: what it kept, that arm's distance from the random mean in SE,
    and the best ranked arm there. Returns on how many targets the kept arm was the best or within
    1 SE of it."""
    from pipelines.finetune.compare import choose_ranking

    agree = 0
    for name in res["target"].unique(maintain_order=True).to_list():
        part = res.filter(pl.col("target") == name)
        rnd = part.filter(pl.col("arm").str.starts_with(f"{family}_s"))
        ranked = part.filter(~pl.col("arm").str.starts_with(f"{family}_s") & (pl.col("arm") != "base"))
        choice = choose_ranking(dict(ranked.select("arm", "choose_loss").iter_rows()), rnd["choose_loss"].to_list(),
                                "default", random=family)  # as the choose stage: random picks are a candidate
        mean, se = random_stats(rnd["eval_loss"])
        loss = dict(ranked.select("arm", "eval_loss").iter_rows()) | {family: mean}
        best = min(loss, key=loss.get)
        ok = choice["kept"] == best or loss[choice["kept"]] - loss[best] <= se
        agree += ok
        print(f"auto {name}: kept {choice['kept']} ({choice['reason']}); on the other rows it is "
              f"{(loss[choice['kept']] - mean) / se:+.1f} SE from random, best {best} "
              f"{(loss[best] - mean) / se:+.1f} SE: {'agrees' if ok else 'disagrees'}")
    return agree


def print_report(res: pl.DataFrame, fraction: float, big_fraction: float, wall_s: float, choose: bool = False,
                 sets: dict[str, list[str]] | None = None) -> None:
    """Tables per target; then per target set (``sets``: tuning, confirmation; the targets in none
    form "other") the per-target SE lines and one line per variant; the worst-case ratio lines last,
    over the confirmation targets when there are any (the ones no default was chosen on)."""
    with pl.Config(tbl_rows=100, tbl_cols=12, tbl_hide_dataframe_shape=True, float_precision=4):
        for name in res["target"].unique(maintain_order=True).to_list():
            print(f"\n{name}")
            print(res.filter(pl.col("target") == name).drop("target"))
    family = f"random{round(fraction * 100)}"
    names = res["target"].unique(maintain_order=True).to_list()
    groups = {k: v for k, v in (sets or {}).items() if v}
    rest = [n for n in names if not any(n in v for v in groups.values())]
    groups |= {"other": rest} if rest else {}
    verdicts: dict[str, dict[str, float]] = {}
    for group, members in groups.items():
        part = res.filter(pl.col("target").is_in(members))
        print(f"\n=== {group} targets ({len(members)}) ===")
        verdicts[group] = summarise(part, fraction, big_fraction)
        for arm, s in variant_summary(part, family).items():
            print(f"variant {arm}: beats {family} by >2 SE on {s['beats_2se']}/{s['targets']} targets, "
                  f">1 SE worse on {s['worse_1se']}/{s['targets']}; worst ratio {s['max_ratio']:.4f}")
    if choose:
        agree = auto_check(res, family)
        print(f"auto_agrees_with_benchmark={agree}/{res['target'].n_unique()}")
    judged = "confirmation" if "confirmation" in verdicts else next(iter(verdicts), "")
    worst = verdicts.get(judged, {})
    print(f"\nworst cases over the {judged} targets:")
    print(f"wall_time_s={wall_s:.0f}")
    for key in RATIO_KEYS:
        print(f"{key}={worst.get(key, float('nan')):.4f}")
