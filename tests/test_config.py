"""Run configuration: the documented default file, overrides, and clear errors."""

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


def test_default_steps_on_a_score_turned_off_are_skipped_with_a_note():
    cfg = load_config(overrides=["score.scores=[ifd, ctx_loss]"])
    assert all("score_target_sim" not in str(step) for step in cfg.select.steps)
    assert {"threshold": {"column": "score_ifd", "max": 1.0}} in cfg.select.steps
    assert any("skipped" in note and "'target_sim'" in note for note in cfg.notes())
    assert load_config().notes() == []


def test_default_config_selects_with_the_benchmark_winner():
    """benchmarks.selection: target_sim beat CoLoR (either reduction) and random on every target."""
    cfg = PipelineConfig()
    assert "target_sim" in cfg.score.scores and cfg.score.target_pooling == "response"
    ranks = [s["top_k"]["column"] for s in cfg.select.steps if "top_k" in s]
    assert ranks == ["score_target_sim"]
    assert cfg.score.color_reduction == "sum"  # when CoLoR is asked for: the mean lost everywhere


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
