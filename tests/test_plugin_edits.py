"""A user's plugin is part of what a stage is made from (issue 37): editing its module reruns the
stage that runs it and everything below, with a note saying why; an untouched plugin rewrites
nothing. The pipeline runs in this process, stage by stage, as the flow runs it (no Prefect)."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import polars as pl
from conftest import run_in_process
from instruct_selectors.scores.base import Score

from flows.config import load_config
from flows.run_folder import RunFolder
from pipelines.plugins import plugin_code
from pipelines.shards import atomic_write_jsonl

SCORE = '''
from instruct_selectors.scores.base import Score

def _gap(inputs):
    return {sign}(inputs.passes["prior/alone"]["loss"] - inputs.passes["prior/full"]["loss"])

LOSS_GAP = Score(name="loss_gap", column="score_loss_gap", compute=_gap,
                 passes=("prior/full", "prior/alone"), definition="loss alone minus after the prompt")

def no_urls(row):
    return "http" not in row["response"], "response holds a URL"
'''


def _package(root: Path, sign: str) -> None:
    (root / "mypkg").mkdir(parents=True, exist_ok=True)
    (root / "mypkg" / "__init__.py").write_text("")
    (root / "mypkg" / "quality.py").write_text(SCORE.format(sign=sign))


def _forget(name: str = "mypkg") -> None:
    """Drop the package from this process, as a new run's process would not have it."""
    for mod in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[mod]
    importlib.invalidate_caches()


def _run_all(tmp: Path) -> tuple[RunFolder, dict[str, dict]]:
    rows = [{"instruction": f"Question {i}: what does item {i} cost?", "input": "",
             "output": f"It costs {i % 7 + 1} dollars." + (" See http://x.io" if i == 2 else "")} for i in range(8)]
    atomic_write_jsonl(rows, tmp / "pool.jsonl")
    cfg = load_config(overrides=[
        "generate.taxonomy.enabled=false", "generate.text.enabled=false", f"generate.inputs=[{tmp / 'pool.jsonl'}]",
        "model.model=tiny", "model.backend=hf", "score.scores=[ifd, loss_gap]", "run.shard_size=4",
        "score.custom=[mypkg.quality:LOSS_GAP]", "select.custom=[mypkg.quality:no_urls]",
        "select.steps=[{top_k: {column: score_loss_gap, fraction: 0.5}}]",
        f"run.out_dir={tmp / 'runs'}", "run.name=plug"])
    return run_in_process(cfg)


def _files(run: RunFolder) -> dict[str, int]:
    """Every file of the run folder but the lock and log, by its modification time."""
    return {str(p.relative_to(run.root)): p.stat().st_mtime_ns for p in run.root.rglob("*")
            if p.is_file() and p.name not in (".lock", "run.log")}


def test_an_edited_plugin_reruns_its_stages_and_its_values_reach_the_export(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    _package(tmp_path / "code", sign="")
    _forget()
    run, first = _run_all(tmp_path)
    before = pl.read_parquet(run.selected).sort("id")["score_loss_gap"]

    _package(tmp_path / "code", sign="-1.0 * ")  # the user flips the score's sign
    _forget()
    run, second = _run_all(tmp_path)
    after = pl.read_parquet(run.selected).sort("id")
    assert (after["score_loss_gap"] == -before).all()
    exported = pl.read_parquet(run.root / "dataset" / "parquet")
    kept = after.filter(pl.col("keep")).sort("score_loss_gap", descending=True)["id"].to_list()
    assert sorted(exported["id"].to_list()) == sorted(kept)
    assert "rescored: score.custom mypkg.quality changed" in second["score"]["notes"]
    assert second["score"]["rows_rescored"] == 8  # every shard: the shard keys carry the code too
    assert "reselected: select.custom mypkg.quality changed" in second["select"]["notes"]
    assert second["collect"]["input_key"] == first["collect"]["input_key"]  # above the plugin: untouched
    assert second["export"]["output_key"] != first["export"]["output_key"]  # below it: rerun
    assert all(r["stage"] != "score" or "plugin_code" in r for r in second.values())


def test_an_untouched_plugin_rewrites_no_file(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    _package(tmp_path / "code", sign="")
    _forget()
    run, first = _run_all(tmp_path)
    files = _files(run)
    _forget()
    run, second = _run_all(tmp_path)
    assert _files(run) == files
    assert json.dumps(second, sort_keys=True) == json.dumps(first, sort_keys=True)


def test_plugin_code_covers_the_package_and_not_installed_libraries(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    _package(tmp_path, sign="")
    (tmp_path / "mypkg" / "helpers.py").write_text("X = 1\n")
    _forget()
    key = plugin_code(["mypkg.quality:LOSS_GAP"])
    (tmp_path / "mypkg" / "helpers.py").write_text("X = 2\n")  # a module the plugin may import
    assert plugin_code(["mypkg.quality:LOSS_GAP"]) != key
    assert list(plugin_code(["polars:DataFrame", "mypkg.quality:no_urls"])) == ["polars", "mypkg.quality"]


# --- a score's model names are resolved from score.models, never silently the run's model ------

def _reward(inputs):
    llm = inputs.llm("reward")
    return [float(len(llm.model_id))] * inputs.table.height


REWARD = Score(name="reward", column="score_reward", compute=_reward, models=("reward",),
               definition="a stand-in for a reward model's score")


def test_a_model_a_score_names_must_be_configured(monkeypatch):
    import pytest

    from flows.config import ConfigError

    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    with pytest.raises(ConfigError, match=r"score 'reward' asks for the model\(s\) \['reward'\].*score.models"):
        load_config(overrides=["score.custom=[test_plugin_edits:REWARD]", "score.scores=[reward]"])


def test_a_named_model_is_the_one_the_score_gets(monkeypatch):
    import flows.llm_cache as llm_cache

    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    cfg = load_config(overrides=["score.custom=[test_plugin_edits:REWARD]", "score.scores=[reward]",
                                 "score.models={reward: {backend: openai, model: my-reward, base_url: 'http://127.0.0.1:9/v1'}}",
                                 "model.model=tiny"])
    asked = []
    monkeypatch.setattr(llm_cache, "get_llm", lambda settings: asked.append(settings) or settings)
    got = llm_cache.model_for(cfg, "reward")
    assert (got.backend, got.model, got.base_url) == ("openai", "my-reward", "http://127.0.0.1:9/v1")
    assert llm_cache.model_for(cfg, "judge").model == "tiny"  # the judge defaults to the run's model
    from flows.lineage import models_per_stage

    assert models_per_stage(cfg, [{"stage": "score"}])["score (reward)"] == "my-reward (openai backend)"
