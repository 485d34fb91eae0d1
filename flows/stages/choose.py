"""Choose the selection's ranking with evidence (``select.auto``): before the select stage, each
candidate ranking picks as many rows as the configured steps keep, a short proxy fine-tune trains
on them, and it is graded on a share of the held-out target rows that the train stage never
evaluates on (flows.target_parts' ``choosing`` rows).

Arms: ``default`` (the configured steps' own picks), one per candidate of ``select.auto`` (the
last top_k ranks by it instead: flows.config_choose), and ``random-s<k>`` for k < proxy.seeds
(drawn as the train stage draws: instruct_selectors.control_arms). The candidate with the lowest
loss is kept only when it beats every other candidate by more than the random arms' spread;
otherwise the default is (pipelines.finetune.compare.choose_ranking). The random arms' mean is a
candidate too: when it wins so, the select stage ships a seeded random pick of the same size. The record holds the table,
the decision and the steps the select stage then runs.

Every arm trains in ``choose/<arm>/`` like a train arm (its arm.json keyed by its rows, the
grading rows and the proxy settings), so a resumed or repeated run retrains only what changed;
candidates that pick the same rows share one fine-tune. Cost: one proxy fine-tune per distinct
pick (``proxy.steps`` steps each) and a selection pass (benchmarks.selection has the figures)."""

from __future__ import annotations

import json
from typing import Any

import polars as pl

from flows.arm_training import content_key, load_arm, train_once, train_spec
from flows.config_choose import DEFAULT, RANDOM, candidate_columns, with_random_pick, with_ranking
from flows.selection_pass import decontamination_files, selection
from flows.stages.base import ShardMap, ShardPlan, StageContext, StageSpec, record
from flows.target_parts import auto_candidates, target_parts, write_held_out
from pipelines.shards import atomic_write_text, write_parquet_if_changed

PLAN_FILE = "plan.json"


def candidates(ctx: StageContext) -> dict[str, list[str]]:
    """Each candidate ranking's columns ({} for the default, which keeps the configured steps)."""
    from instruct_selectors.scores.catalogue import column_owner

    cfg = ctx.cfg
    owners = column_owner(cfg.score.custom)
    return {DEFAULT: [], **{c: candidate_columns(c, owners, cfg.score.scores) for c in auto_candidates(cfg)}}


def picks(pool: pl.DataFrame, kept: int, columns: list[str]) -> list[str]:
    """The ids a ranking by ``columns`` keeps among the ``pool`` rows: as many as the default kept."""
    from instruct_selectors.policies import select

    step = {"column": columns[0]} if len(columns) == 1 else {"fuse": columns}
    table, _ = select(pool, [{"top_k": {**step, "k": kept}}])
    return sorted(table.filter(pl.col("keep"))["id"].to_list())


def proxy_bf16(dtype: str) -> bool:
    """Whether the proxies train under bfloat16 autocast (``select.proxy.dtype``; auto: where native)."""
    if dtype != "auto":
        return dtype == "bfloat16"
    import torch

    from pipelines.llm.hf_choices import native_bf16

    return torch.cuda.is_bf16_supported() if torch.cuda.is_available() else native_bf16()


def plan(ctx: StageContext) -> ShardPlan:
    """Select with the configured steps once, write every arm's rows and the grading rows; the
    arms to train are the distinct picks."""
    from instruct_selectors.control_arms import candidates as reached_ranking
    from instruct_selectors.control_arms import random_pick

    cfg, folder = ctx.cfg, ctx.run.choose
    ranked = candidates(ctx)
    columns = sorted({c for cols in ranked.values() for c in cols})
    selection(ctx, cfg.select.steps, folder / "selection.parquet", carry=tuple(columns))
    table = pl.read_parquet(folder / "selection.parquet")
    pool = reached_ranking(table, cfg.select.steps).unique("id", maintain_order=True)
    default = sorted(pool.filter(pl.col("keep"))["id"].to_list())
    chosen = {arm: default if not cols else picks(pool.select("id", *cols), len(default), cols)
              for arm, cols in ranked.items()}
    chosen |= {f"random-s{k}": random_pick(pool["id"].to_list(), len(default), cfg.run.seed + k)
               for k in range(cfg.select.proxy.seeds)}
    from instruct_selectors.stream_select import SELECTION_COLUMNS

    rows = pool.drop([c for c in SELECTION_COLUMNS if c in pool.columns])
    arms, first = [], {}
    for arm, ids in chosen.items():
        twin = first.setdefault(tuple(ids), arm)
        if twin == arm:
            write_parquet_if_changed(rows.filter(pl.col("id").is_in(ids)), folder / arm / "rows.parquet")
        arms.append({"arm": arm, "rows": len(ids), "same_as": None if twin == arm else twin,
                     "columns": ranked.get(arm)})
    parts = target_parts(cfg)
    write_held_out(folder / "target-choosing.jsonl", parts, parts.choosing)
    atomic_write_text(folder / PLAN_FILE, json.dumps({"arms": arms, "pool": pool.height}, indent=1) + "\n")
    todo = [i for i, a in enumerate(arms) if a["same_as"] is None]
    return ShardPlan(todo, info={"pool": pool.height})


def _arms(ctx: StageContext) -> list[dict[str, Any]]:
    return json.loads((ctx.run.choose / PLAN_FILE).read_text(encoding="utf-8"))["arms"]


def run_arm(ctx: StageContext, index: int) -> int:
    """Proxy-train arm ``index`` of the plan unless its arm.json was made from the same inputs."""
    cfg, arm = ctx.cfg, _arms(ctx)[index]["arm"]
    folder, proxy = ctx.run.choose, cfg.select.proxy
    bf16 = proxy_bf16(proxy.dtype)  # resolved here: a run resumed on other hardware retrains
    source, grading = folder / arm / "rows.parquet", folder / "target-choosing.jsonl"
    spec = train_spec(cfg, source, folder / arm, grading, method=proxy.method, max_steps=proxy.steps,
                      options={"micro_batch": proxy.batch_size, "gradient_checkpointing": False,
                               "bf16": bf16},
                      eval_before=arm == DEFAULT, batch_size=proxy.batch_size,
                      max_length=min(proxy.max_length, cfg.model.max_length))
    key = content_key({"proxy": proxy.model_dump(mode="json", exclude={"seeds", "dtype"}), "bf16": bf16}, cfg, source, grading)
    return int(train_once(ctx, arm, key, spec, {})["metrics"].get("rows") or 0)


def finish(ctx: StageContext, started: float, rows: int, plan: ShardPlan | None = None) -> dict[str, Any]:
    """Every arm's proxy loss, the decision and the steps the select stage runs."""
    from pipelines.finetune.compare import choose_ranking

    cfg, folder = ctx.cfg, ctx.run.choose
    arms = _arms(ctx)
    done = {a["arm"]: load_arm(folder / (a["same_as"] or a["arm"]) / "arm.json") for a in arms}
    missing = [a for a, d in done.items() if d is None]
    if missing:
        raise ValueError(f"choose arms {missing} have no arm.json: their proxy training did not finish")
    loss = {a: d["metrics"]["eval_loss"] for a, d in done.items()}
    random = [v for a, v in loss.items() if a.startswith("random-")]
    choice = choose_ranking({a: v for a, v in loss.items() if not a.startswith("random-")}, random, DEFAULT,
                            random=RANDOM)
    table = [{"arm": a["arm"] + (f" (= {a['same_as']})" if a["same_as"] else ""), "rows": a["rows"],
              "proxy loss": loss[a["arm"]]} for a in arms if not a["arm"].startswith("random-")]
    table.append({"arm": f"{RANDOM} ({len(random)} seeds)", "rows": arms[-1]["rows"],
                  "proxy loss": sum(random) / len(random), "loss min-max": f"{min(random):.4g}-{max(random):.4g}"})
    base = done[DEFAULT]["metrics"].get("eval_loss_before")
    if base is not None:
        table.insert(0, {"arm": "base (untrained)", "rows": 0, "proxy loss": base})
    if choice["kept"] == RANDOM:
        steps = with_random_pick(cfg.select.steps, cfg.run.seed)
    else:
        columns = next(a["columns"] for a in arms if a["arm"] == choice["kept"])
        steps = with_ranking(cfg.select.steps, columns) if columns else cfg.select.steps
    return record(ctx.run, STAGE.name, started, rows_trained=rows, table=table, choice=choice, steps=[s.spec() for s in steps],
                  graded_on={"path": "choose/target-choosing.jsonl", "rows": len(target_parts(cfg).choosing)},
                  proxy=cfg.select.proxy.model_dump(mode="json"), pool=json.loads(
                      (folder / PLAN_FILE).read_text(encoding="utf-8"))["pool"])


def _run(ctx: StageContext) -> dict[str, Any]:
    return STAGE.per_shard.run_all(ctx)


STAGE = StageSpec(name="choose", section="select.auto", run=_run, needs=("scored",), makes=("choice",),
                  enabled=lambda cfg: bool(auto_candidates(cfg)), files=decontamination_files, folders=("choose",),
                  plugins=lambda cfg: {"select.custom": cfg.select.custom}, redo="rechosen",
                  per_shard=ShardMap(plan=plan, run_shard=run_arm, finish=finish))
