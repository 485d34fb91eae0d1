"""Crash anywhere, resume, same bytes: the flow is SIGKILLed at a point inside each stage that
writes something (INSTRUCT_FORGE_KILL_AT, pipelines.shards.crash_point) and once more at a
seeded random point of what is left, restarted after each kill, and must end with the dataset
files (Parquet, JSONL, HF dataset, card) byte-identical to an undisturbed run, without redoing
scored shards it finished. The card's token table is the one exception: it counts the tokens the
killed attempts spent too."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from flows.pipeline import STAGE_NAMES as STAGES
from flows.run_folder import RunFolder
from pipelines.shards import KILL_AT_ENV, atomic_write_jsonl

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
SEED = 1234


def _args(tmp: Path) -> list[str]:
    data = tmp / "input.jsonl"
    if not data.exists():
        atomic_write_jsonl([{"instruction": f"Question {i}: what does item {i} cost?",
                             "input": f"Item {i} costs {i % 7 + 1} dollars." if i % 2 else "",
                             "output": f"It costs {i % 7 + 1} dollars." + " Really." * (i % 3)}
                            for i in range(24)], data)
    # Both generators (kept small), an input dataset, a target score (so condition writes),
    # --auto (choose's proxies) and --train: every stage writes, so every stage gets a kill point.
    small = ["generate.taxonomy.max_disciplines=1", "generate.taxonomy.sessions_per_syllabus=2",
             "generate.taxonomy.questions_per_syllabus=2", "generate.taxonomy.max_tokens=24",
             "generate.text.max_passages=3", "generate.text.max_tokens=24", "run.shard_size=4",
             "train.max_steps=2", "model.max_length=128", "select.proxy.steps=2", "select.proxy.seeds=2",
             'select.steps=[{dedup: {near: true}}, {top_k: {column: score_ifd, fraction: 0.5}}]']
    return ["--model", "tiny", "--backend", "hf", "--input", str(data), "--out-dir", str(tmp / "runs"),
            "--scores", "ifd,ctx_loss,target_sim", "--auto", "target_sim", "--train", "lora",
            *[x for kv in small for x in ("--set", kv)]]


def _start(args: list[str], tmp: Path, kill_at: str | None = None) -> subprocess.Popen:
    env = dict(os.environ, PREFECT_HOME=str(tmp / "prefect-home"), HF_HUB_OFFLINE="1",
               PREFECT_LOGGING_LEVEL="WARNING")
    env.pop(KILL_AT_ENV, None)
    if kill_at:
        env[KILL_AT_ENV] = kill_at
    return subprocess.Popen([sys.executable, "-m", "flows.build_dataset", *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _folder(stage: str) -> str | None:
    """The part of a path that only ``stage``'s writes contain (None: nothing of its own)."""
    return {"generate_taxonomy": "generate_taxonomy/", "generate_text": "generate_text/",
            "collect": "/examples/part-", "condition": "/conditional/", "score": "/scored/part-", "choose": "/choose/",
            "select": "/selected/", "refusal_aware": "/transformed/", "export": "/dataset/",
            "train": "/train/"}.get(stage)


def test_killed_in_every_stage_resumes_to_the_same_bytes(tmp_path):
    args = _args(tmp_path)
    ref = _start([*args, "--run-name", "crash"], tmp_path)
    assert ref.wait(timeout=600) == 0, ref.stderr.read()[-3000:]
    # The card shows the config, run name and out_dir included: the crashed run reuses the path.
    ref_run = RunFolder((tmp_path / "runs" / "crash").rename(tmp_path / "ref"))

    # Kill points: right after the first finished write of every stage that wrote files in the
    # reference run, in pipeline order; each restart resumes and runs into the next point.
    points = []
    for stage in STAGES:
        part = _folder(stage)
        writes = [p for p in ref_run.root.rglob("*")
                  if part and p.is_file() and part in "/" + str(p.relative_to(ref_run.root))]
        if writes:
            points.append((stage, f"{part}:1"))
    assert {"generate_taxonomy", "generate_text", "collect", "condition", "score", "choose", "select", "export",
            "train"} <= {s for s, _ in points}

    run = RunFolder(tmp_path / "runs" / "crash")
    scored_before = {}
    for stage, point in points:
        proc = _start([*args, "--run-name", "crash"], tmp_path, kill_at=point)
        rc = proc.wait(timeout=600)
        assert rc == -signal.SIGKILL, f"kill at {point} ({stage}) did not fire: rc {rc}\n{proc.stderr.read()[-3000:]}"
        if stage == "score":
            scored_before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in run.scored.glob("part-*")}
            assert scored_before, "the kill must land after a finished scored shard"

    # And once more at a seeded random point of the (now short) remaining run, chosen among the
    # writes it is certain to make: every stage without a record yet (the one killed last and
    # those after it) writes stages/<stage>.json through the atomic writers when it finishes.
    unfinished = [s for s in STAGES if ref_run.record_path(s).exists() and not run.record_path(s).exists()]
    assert unfinished, "the last kill must leave a stage to finish"
    stage = random.Random(SEED).choice(unfinished)
    point = f"/stages/{stage}.json:1"
    proc = _start([*args, "--run-name", "crash"], tmp_path, kill_at=point)
    rc = proc.wait(timeout=600)
    assert rc == -signal.SIGKILL, f"random kill at {point} did not fire: rc {rc}\n{proc.stderr.read()[-3000:]}"
    assert run.record_path(stage).exists()  # killed right after that write, as chosen

    final = _start([*args, "--run-name", "crash"], tmp_path)
    assert final.wait(timeout=600) == 0, final.stderr.read()[-3000:]
    for name, (ino, mtime) in scored_before.items():  # finished shards were not redone
        st = (run.scored / name).stat()
        assert (st.st_ino, st.st_mtime_ns) == (ino, mtime), f"{name} was rewritten"
    want, got = _files(ref_run.dataset), _files(run.dataset)
    assert want and want.keys() == got.keys()
    # The card's token table is what the run really spent, killed attempts included, so it is
    # the one part that may differ (documented in pipelines/export.py usage_card); the rest is
    # byte-identical.
    want["README.md"], ref_usage = _split_usage(want["README.md"])
    got["README.md"], crashed_usage = _split_usage(got["README.md"])
    assert ref_usage and crashed_usage
    for name in want:
        assert want[name] == got[name], f"dataset/{name} differs after the crashes"


def _split_usage(card: bytes) -> tuple[bytes, bytes]:
    """(the card without its '## Model tokens used' section, that section)."""
    text = card.decode()
    start = text.index("## Model tokens used")
    end = text.find("\n## ", start + 1)
    end = len(text) if end < 0 else end + 1
    return (text[:start] + text[end:]).encode(), text[start:end].encode()
