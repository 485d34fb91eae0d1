"""Run configuration: the documented default file, overrides, and clear errors."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from flows.config import ConfigError, PipelineConfig, load_config

REPO = Path(__file__).resolve().parents[1]


def test_documented_default_file_equals_the_defaults():
    assert load_config(REPO / "data" / "configs" / "default.toml") == PipelineConfig()


def test_overrides_parse_yaml_values():
    cfg = load_config(overrides=["run.seed=7", "score.scores=[ifd, ctx_loss]", "select.steps=[{dedup: {}}]"])
    assert cfg.run.seed == 7 and cfg.score.scores == ["ifd", "ctx_loss"]


def test_fingerprint_ignores_run_name_but_not_seed():
    a, b = PipelineConfig(), load_config(overrides=["run.name=x"])
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() == load_config(overrides=["model.threads=1"]).fingerprint()  # where, not what
    assert a.fingerprint() != load_config(overrides=["run.seed=1"]).fingerprint()


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["score.bogus=1"], "score.bogus"),
        (["run.shard_size=0"], "run.shard_size"),
        (["select.steps=[{top_k: {column: score_ifd}}]"], "give exactly one of k, fraction, tau"),
        (["score.scores=[ifd]", "select.steps=[{top_k: {column: score_color, fraction: 0.3}}]"],
         "uses score_color, but score.scores does not include 'color'"),
        (["nonsense"], "section.key=value"),
    ],
)
def test_errors_name_the_option(overrides, message):
    with pytest.raises(ConfigError, match=None) as err:
        load_config(overrides=overrides)
    assert message in str(err.value)


def test_yaml_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("run: [unclosed\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    assert str(bad) in str(err.value)


def test_run_folder_refuses_a_different_config(tmp_path):
    from flows.run_folder import RunFolder

    run = RunFolder(tmp_path)
    run.claim("aaa", "{}")
    run.claim("aaa", "{}")  # same config: the folder resumes
    with pytest.raises(ValueError, match="different configuration"):
        run.claim("bbb", "{}")


def test_selection_steps_are_typed_once_when_the_config_loads():
    """select.steps are step models after load (issue 36: parsed once), and dump as they were written,
    so a run folder's config and fingerprint read the same as the file."""
    written = [{"dedup": {"near": True}}, {"top_k": {"column": "score_ifd", "fraction": 0.5, "largest": False}}]
    cfg = load_config(overrides=["select.steps=" + json.dumps(written)])
    assert [type(s).__name__ for s in cfg.select.steps] == ["Dedup", "TopK"]
    assert cfg.select.steps[1].largest is False and cfg.select.steps[1].count(10) == 5
    assert cfg.model_dump(mode="json")["select"]["steps"] == written
    again = PipelineConfig.model_validate_json(cfg.model_dump_json())
    assert again.select.steps == cfg.select.steps and again.fingerprint() == cfg.fingerprint()
    with pytest.raises(ConfigError, match=r"step 1 \(top_k\).*give exactly one of k, fraction, tau"):
        load_config(overrides=['select.steps=[{"top_k": {"column": "score_ifd"}}]'])


def test_default_steps_on_a_score_turned_off_are_skipped_with_a_note():
    cfg = load_config(overrides=["score.scores=[ifd, ctx_loss]"])
    assert all("score_target_sim" not in str(step) for step in cfg.select.steps)
    assert {"threshold": {"column": "score_ifd", "max": 1.0}} in [s.spec() for s in cfg.select.steps]
    assert any("skipped" in note and "'target_sim'" in note for note in cfg.notes())
    assert load_config().notes() == []


def test_default_config_selects_with_the_benchmark_winner():
    """benchmarks.selection (issue 22): the rank fusion of target_sim and CoLoR-sum beat random on
    2 of 3 targets absent from the pool and lost on none; each score alone lost somewhere."""
    cfg = PipelineConfig()
    assert {"target_sim", "color"} <= set(cfg.score.scores) and cfg.score.options_for("target_sim").pooling == "weighted"
    ranks = [s for s in cfg.select.steps if s.name == "top_k"]
    assert [r.fuse for r in ranks] == [("score_target_sim", "score_color")]
    assert cfg.score.options_for("color").reduction == "sum"  # the mean lost everywhere


@pytest.mark.parametrize("old, new", [
    ("score.color_reduction=mean", "score.options.color.reduction"),
    ("score.target_pooling=all", "score.options.target_sim.pooling"),
    ("score.attn_layer=3", "score.options.ctx_attn.layer"),
    ("score.judge.model=big", "score.models.judge"),
])
def test_a_moved_score_setting_says_where_it_went(old, new):
    """Per-score settings live in score.options.<name> (issue 36): the old key is an error that names the new."""
    with pytest.raises(Exception, match=re.escape(new)):
        load_config(overrides=[old])
    key, value = new.split(" ")[0], old.split("=")[1]
    if key != "score.models.judge":
        cfg = load_config(overrides=[f"{key}={value}"])
        assert cfg.score.options[key.split(".")[2]] == {key.split(".")[3]: int(value) if value.isdigit() else value}


def test_a_default_fusion_keeps_the_scores_still_computed():
    cfg = load_config(overrides=["score.scores=[target_sim, ifd]"])
    assert {"top_k": {"column": "score_target_sim", "fraction": 0.5}} in [s.spec() for s in cfg.select.steps]
    assert any("ranks by score_target_sim" in note and "color" in note for note in cfg.notes())
    cfg = load_config(overrides=["score.scores=[ifd]"])
    assert not [s for s in cfg.select.steps if s.name == "top_k"]
    with pytest.raises(ConfigError, match="color"):  # a fusion the user wrote is not narrowed
        load_config(overrides=["score.scores=[target_sim]",
                               'select.steps=[{"top_k": {"fuse": ["score_target_sim", "score_color"], "k": 3}}]'])


def test_loading_the_config_imports_neither_torch_nor_transformers():
    """flows.config validates method names from pipelines.finetune.methods; that must not pull the
    training stack in (seconds per process, and a config is read everywhere)."""
    code = (
        "import sys, flows.config\n"
        "flows.config.load_config(overrides=['train.method=rslora'])\n"
        "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
