"""Bonito (generate_text) and GLAN's levels (generate_taxonomy) map per shard over worker processes
and write the same bytes as the sequential path (issue 20, part 3)."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.config import load_config
from flows.pipeline import BY_NAME, run_stage
from flows.run_folder import RunFolder
from flows.stages.base import StageContext

pytestmark = pytest.mark.slow


def _setup(tmp: Path, name: str):
    cfg = load_config(overrides=[
        "generate.taxonomy.enabled=false", "generate.text.max_passages=5", "generate.text.max_tokens=24",
        "generate.text.task_types=[qa, ynqa]", "model.model=tiny", "model.backend=hf", "model.threads=1",
        "run.shard_size=3", f"run.out_dir={tmp / 'runs'}", f"run.name={name}"])
    run = RunFolder(cfg.run_dir())
    run.claim(cfg.fingerprint(), cfg.model_dump_json())
    return run, cfg


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _shard(cfg_json: str, run_dir: str, index: int) -> int:
    from flows.config import PipelineConfig

    ctx = StageContext(PipelineConfig.model_validate_json(cfg_json), RunFolder(run_dir), {})
    return BY_NAME["generate_text"].per_shard.run_shard(ctx, index)


def test_bonito_shards_on_two_worker_processes_equal_the_sequential_run(tmp_path):
    from dask.distributed import Client, LocalCluster

    seq_run, cfg = _setup(tmp_path, "sequential")
    seq = run_stage("generate_text", seq_run, cfg)
    map_run, _ = _setup(tmp_path, "mapped")
    stage = BY_NAME["generate_text"].per_shard
    used: list[int] = []

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      host="127.0.0.1") as cluster, Client(cluster) as client:
        def map_shards(ctx: StageContext, todo: list[int]) -> int:
            used.extend(todo)
            futures = client.map(_shard, [cfg.model_dump_json()] * len(todo), [str(map_run.root)] * len(todo),
                                 todo[::-1], pure=False)  # reversed: order must not matter
            return sum(client.gather(futures))

        mapped = stage.run_all(StageContext(cfg, map_run, {}), map_shards)
    assert len(used) == seq["counts"]["shards"]["shards"] == 4  # 5 passages x 2 types, 3 a shard
    assert seq["counts"]["generated"] == mapped["counts"]["generated"] > 0
    want, got = _files(seq_run.generator("generate_text")), _files(map_run.generator("generate_text"))
    assert want.keys() == got.keys() and any(k.startswith("generated/part-") for k in want)
    for name in want:
        assert want[name] == got[name], name


def _glan_shard(cfg_json: str, run_dir: str, shard: str) -> int:
    from flows.config import PipelineConfig

    ctx = StageContext(PipelineConfig.model_validate_json(cfg_json), RunFolder(run_dir), {})
    return BY_NAME["generate_taxonomy"].per_shard.run_shard(ctx, shard)


def test_glan_levels_on_two_worker_processes_equal_the_sequential_run(tmp_path):
    from dask.distributed import Client, LocalCluster

    def setup(name):
        cfg = load_config(overrides=[
            "generate.text.enabled=false", "generate.taxonomy.max_disciplines=2",
            "generate.taxonomy.subjects_per_discipline=1", "generate.taxonomy.max_tokens=24",
            "model.model=tiny", "model.backend=hf", "model.threads=1", "run.shard_size=1",
            f"run.out_dir={tmp_path / 'runs'}", f"run.name={name}"])
        run = RunFolder(cfg.run_dir())
        run.claim(cfg.fingerprint(), cfg.model_dump_json())
        return run, cfg

    seq_run, cfg = setup("sequential")
    seq = run_stage("generate_taxonomy", seq_run, cfg)
    map_run, _ = setup("mapped")
    rounds: list[list[str]] = []
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      host="127.0.0.1") as cluster, Client(cluster) as client:
        def map_shards(ctx: StageContext, todo: list[str]) -> int:
            rounds.append(list(todo))
            futures = client.map(_glan_shard, [cfg.model_dump_json()] * len(todo), [str(map_run.root)] * len(todo),
                                 todo[::-1], pure=False)
            return sum(client.gather(futures))

        mapped = BY_NAME["generate_taxonomy"].per_shard.run_all(StageContext(cfg, map_run, {}), map_shards)
    assert rounds[0] == ["subjects/0", "subjects/1"]  # 2 disciplines, 1 a shard: one task each
    assert seq["counts"]["generated"] == mapped["counts"]["generated"] > 0
    assert mapped["usage"]["hf:tiny"]["calls"] == seq["usage"]["hf:tiny"]["calls"] > 0  # shard ledgers, summed
    assert rounds[1] == ["syllabi/0", "syllabi/1"]  # the next level: the next round
    want, got = _files(seq_run.generator("generate_taxonomy")), _files(map_run.generator("generate_taxonomy"))
    assert want.keys() == got.keys() and "subjects/part-00001.parquet" in want
    assert [name for name in want if want[name] != got[name]] == []
