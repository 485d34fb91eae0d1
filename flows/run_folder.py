"""The one owner of a run folder's layout: every path and file name in it comes from here.

    run = RunFolder(Path("runs/run-1a2b3c"))
    run.scored                      # scored/ shards
    run.write_record(record)        # stages/<stage>.json

Layout::

    config.json             the resolved config as it may be shared: endpoint URLs without credentials,
                            secret-named values <redacted>, paths as pipelines.redact.portable_paths writes them
    .config-local.json      the same with the paths as given (what `python -m flows.stages STAGE RUN_DIR`
                            reruns a stage with); like .lock and run.log, never shared (LOCAL_FILES)
    .config-fingerprint     the config's fingerprint: a folder belongs to one config
    .lock                   held (flock) by the process working in the folder; names its pid and host
    run.log                 every log line of the runs in this folder, with tracebacks
    generate_taxonomy/      GLAN levels (subjects, syllabi, questions, examples/ shards, rejects)
    generate_text/          Bonito output (examples/ shards, rejects)
    generate_custom/<name>/ a user's generator (generate.custom): examples/ shards, rejects, counts.json
    examples/               every example gathered from generation and inputs (+ rejects-input-<name>-<hash>.jsonl)
    conditional/            what the target set gives: CoLoR-Filter's conditional model (cached by
                            fingerprint), target_sim's target embedding and otd's target rows (.npy)
    scored/                 examples with score_* columns, one shard per examples shard
    choose/                 with select.auto: each candidate ranking's proxy fine-tune (<arm>/arm.json, rows),
                            the grading rows (target-choosing.jsonl), plan.json
    selected/               all.parquet (every row with keep / dropped_by / keep_reason), summary.json
    transformed/            with transform.refusal_aware: the kept rows with R-Tuning's certainty suffix
                            (shards + rejects-*.jsonl), what export then writes
    dataset/                the export: Parquet, JSONL, HF dataset on disk, README.md card
    train/                  fine-tuning output and metrics (with --train); control_rows.parquet with
                            train.control_tokens (every selected row, labelled <|good|>/<|bad|>)
    stages/                 one JSON record per stage; files in it are named relative to the run folder
                            (``run.path(name)`` gives the file back), so a shared folder holds no user path
    stages/usage/           model usage ledgers per stage (and per score shard), kept across attempts
    report.md, report/      the run report and its score histograms

A run folder is data, never code: it may come from someone else. Nothing in it is unpickled
(Prefect keeps no results here: resume reads the JSON stage records, flows/resume.py), and
``claim`` refuses a folder that is not empty and was not made by this project, because stages
delete surplus shards and replace whole folders in theirs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from pipelines.redact import redact_config
from pipelines.shards import atomic_write_text, list_shards, rejects_file

GENERATORS = ("generate_taxonomy", "generate_text")
REPORT_NAME = "report"
FINGERPRINT_MARKER = ".config-fingerprint"  # the mark of a folder this project made
# What may be in a folder before its first claim: build_dataset's main() opens the run log and
# takes the lock before the flow claims the folder.
BEFORE_CLAIM = frozenset({".lock", "run.log"})
# What stays on this machine: the log (tracebacks name the user's files), the lock (pid, host), and
# the config with the user's paths. Everything else in a run folder names no user's directory.
LOCAL_FILES = frozenset({*BEFORE_CLAIM, ".config-local.json"})


class RunFolderConflict(ValueError):
    """The folder was made with another configuration."""


@dataclass(frozen=True)
class RunFolder:
    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    # --- stage outputs -------------------------------------------------------------------
    def generator(self, stage: str) -> Path:
        """A generator's own folder (its levels, rejects and examples/)."""
        if stage not in GENERATORS:
            raise ValueError(f"unknown generator stage {stage!r}: {GENERATORS}")
        return self.root / stage

    def generated_examples(self, stage: str) -> Path:
        return self.generator(stage) / "examples"

    def custom_generator(self, name: str) -> Path:
        """A user's generator's folder (generate.custom): examples/ shards, rejects, counts.json."""
        if not name or "/" in name or name in (".", ".."):
            raise ValueError(f"a generator name must be a plain name, got {name!r}")
        return self.root / "generate_custom" / name

    def generated_folders(self) -> list[tuple[str, Path]]:
        """(source name, examples folder) of every generator that wrote here, built-ins first."""
        out = [(stage, self.generated_examples(stage)) for stage in GENERATORS]
        custom = self.root / "generate_custom"
        if custom.is_dir():
            out += [(f"generate_custom:{d.name}", d / "examples") for d in sorted(custom.iterdir()) if d.is_dir()]
        return out

    @property
    def examples(self) -> Path:
        return self.root / "examples"

    def input_rejects(self, input_path: str | Path) -> Path:
        """``examples/rejects-input-<file name>-<hash of the path>.jsonl``: one per input, even
        for two inputs with the same file name (``a/train.jsonl``, ``b/train.jsonl``)."""
        tag = hashlib.blake2b(str(input_path).encode("utf-8"), digest_size=3).hexdigest()
        return rejects_file(self.examples, input_path, prefix="input-", tag=tag)

    @property
    def conditional(self) -> Path:
        return self.root / "conditional"

    def target_embedding(self, key: str) -> Path:
        """The target set's mean embedding for target_sim (``key``: a fingerprint of what made it)."""
        return self.conditional / f"target-embedding-{key}.npy"

    def target_matrix(self, key: str) -> Path:
        """The target rows' embeddings, one row each, for otd (``key``: as for target_embedding)."""
        return self.conditional / f"target-rows-{key}.npy"

    @property
    def scored(self) -> Path:
        return self.root / "scored"

    def score_rejects(self, index: int) -> Path:
        """Rows of scored shard ``index`` whose judge answer never parsed (score_judge is null)."""
        return rejects_file(self.scored, f"{index:05d}", prefix="judge-")

    def score_rejects_files(self) -> list[Path]:
        return sorted(self.scored.glob("rejects-judge-*.jsonl"))

    def score_counts(self, index: int) -> Path:
        """What scoring shard ``index`` cut (rows truncated to max_length), written before the shard."""
        return self.scored / f"counts-{index:05d}.json"

    def score_counts_files(self) -> list[Path]:
        return sorted(self.scored.glob("counts-*.json"))

    @property
    def choose(self) -> Path:
        """select.auto's proxy arms (flows/stages/choose.py)."""
        return self.root / "choose"

    @property
    def selected(self) -> Path:
        return self.root / "selected" / "all.parquet"

    @property
    def selection_summary(self) -> Path:
        return self.root / "selected" / "summary.json"

    @property
    def transformed(self) -> Path:
        """The refusal_aware transform's shards: the kept rows with the certainty suffix."""
        return self.root / "transformed"

    @property
    def dataset(self) -> Path:
        return self.root / "dataset"

    @property
    def train(self) -> Path:
        return self.root / "train"

    def train_arm(self, arm: str) -> Path:
        """One training arm's folder (``selected``, ``random-s0``, ``whole``): model, metrics, arm.json."""
        return self.train / arm

    @property
    def control_rows(self) -> Path:
        """train.control_tokens: every selected row with its <|good|>/<|bad|> label, the trainer's input."""
        return self.root / "train" / "control_rows.parquet"

    @property
    def log(self) -> Path:
        """Full log of the runs in this folder, tracebacks included (the terminal gets one line)."""
        return self.root / "run.log"

    def sample(self, stage: str, n: int = 5) -> pl.DataFrame | None:
        """The first ``n`` rows of what ``stage`` wrote (for artifacts), or None; reads only those."""
        folder = {**{g: self.generated_examples(g) for g in GENERATORS},
                  "generate_custom": next((f for _, f in self.generated_folders()[len(GENERATORS):]), None),
                  "collect": self.examples, "score": self.scored, "refusal_aware": self.transformed}.get(stage)
        if folder is not None:
            shards = list_shards(folder)
            return pl.scan_parquet(shards[0]).head(n).collect() if shards else None
        if stage in ("select", "export") and self.selected.exists():
            return pl.scan_parquet(self.selected).head(n).collect()
        return None

    # --- stage records -------------------------------------------------------------------
    def record_path(self, stage: str) -> Path:
        return self.root / "stages" / f"{stage}.json"

    def write_record(self, record: dict[str, Any]) -> dict[str, Any]:
        """Save ``record`` as stages/<stage>.json and return it as saved: plain JSON, with every
        path under the run folder made relative to it (read them back with :meth:`path`)."""
        text = json.dumps(self.relative(record), indent=2, sort_keys=True, default=str)
        atomic_write_text(self.record_path(record["stage"]), text)
        return json.loads(text)

    def relative(self, value: Any) -> Any:
        """``value`` (dicts, lists, strings, paths) with every path in it made shareable
        (pipelines.redact.portable_paths): a file in the run folder relative to it
        (``dataset/parquet``; the folder itself is ``.``; inside a string too, as in the backend key
        ``hf:conditional/cond-<hash>``), another one relative to the working directory when inside
        it, else its name. Records, results and the report then name no user's directory, and the
        folder still works after a move."""
        from pipelines.redact import portable_paths

        roots = tuple(self._roots())

        def one(v: Any) -> Any:
            if isinstance(v, dict):
                return {one(k): one(x) for k, x in v.items()}
            if isinstance(v, list | tuple):
                return [one(x) for x in v]
            if not isinstance(v, str):
                return v
            for root in roots:  # the root as spelled, relative ones too ("runs/r/dataset")
                if v == root:
                    return "."
                if v.startswith(root + os.sep):
                    return v[len(root) + 1:]
            return portable_paths(v, roots)

        return one(_plain(value))

    def _roots(self) -> list[str]:
        """The spellings of the root a path may start with (as given, absolute, symlinks resolved)."""
        spelled = [str(self.root), os.path.abspath(self.root), str(self.root.resolve())]
        return sorted({r.rstrip(os.sep) for r in spelled if r not in ("", ".", os.sep)}, key=len, reverse=True)

    def path(self, name: str | os.PathLike) -> Path:
        """A file named in a record (relative to the run folder; an absolute path, as older
        records have, is kept) as a path to open."""
        p = Path(name)
        return p if p.is_absolute() else self.root / p

    def usage_file(self, stage: str, index: int | str | None = None) -> Path:
        """Model usage (tokens, calls, retries) of ``stage``, or of its shard ``index`` (a number,
        or a name such as ``syllabi-00003`` for stages whose shards come in rounds)."""
        name = stage if index is None else f"{stage}-{index:05d}" if isinstance(index, int) else f"{stage}-{index}"
        return self.root / "stages" / "usage" / f"{name}.json"

    def usage_files(self, stage: str) -> list[Path]:
        """The stage's own ledger and its shards' ledgers."""
        folder = self.root / "stages" / "usage"
        return sorted(p for p in folder.glob(f"{stage}*.json")
                      if p.stem == stage or re.fullmatch(r"-([a-z_]+-)?\d+", p.stem[len(stage):]))

    def load_record(self, stage: str) -> dict[str, Any] | None:
        path = self.record_path(stage)
        return json.loads(path.read_text()) if path.exists() else None

    def records(self, stages: tuple[str, ...]) -> list[dict[str, Any]]:
        """The records of ``stages`` that exist, in that order."""
        return [r for r in (self.load_record(s) for s in stages) if r is not None]

    # --- ownership: one config per folder ------------------------------------------------
    @property
    def config_file(self) -> Path:
        return self.root / "config.json"

    @property
    def local_config_file(self) -> Path:
        return self.root / ".config-local.json"

    def claim(self, fingerprint: str, config_json: str) -> None:
        """Bind the folder to one config.

        A run folder belongs to one config: its stage records and shards are reused on resume
        (keyed by content within the folder), so the config is part of every key and fixed here.

        A folder that is not empty (bar the lock and the log) and has no fingerprint was not made
        by this project: it is refused, since stages delete and replace files in their folders.
        config.json is saved without secrets (pipelines.redact.redact_config).
        """
        self.refuse_foreign()
        marker = self.root / FINGERPRINT_MARKER
        if marker.exists() and marker.read_text().strip() != fingerprint:
            raise RunFolderConflict(
                f"run folder {self.root} was made with a different configuration "
                f"(fingerprint {marker.read_text().strip()} vs {fingerprint}): use another --run-name"
            )
        if not marker.exists():
            atomic_write_text(marker, fingerprint)
        if not self.config_file.exists() or not self.local_config_file.exists():
            atomic_write_text(self.local_config_file, _without_secrets(config_json))
            atomic_write_text(self.config_file, json.dumps(self.relative(json.loads(_without_secrets(config_json))),
                                                           indent=2))

    def refuse_foreign(self) -> None:
        """Raise RunFolderConflict when the folder exists, holds files (bar the lock and the log)
        and has no fingerprint: this project did not make it, and its stages would delete surplus
        ``part-*.parquet`` files and replace ``dataset/hf`` there."""
        if (self.root / FINGERPRINT_MARKER).exists() or not self.root.is_dir():
            return
        strangers = sorted(p.name for p in self.root.iterdir() if p.name not in BEFORE_CLAIM)
        if strangers:
            shown = ", ".join(strangers[:5]) + (", ..." if len(strangers) > 5 else "")
            raise RunFolderConflict(
                f"{self.root} is not empty ({shown}) and is not a run folder of this project "
                f"(no {FINGERPRINT_MARKER}); a run deletes and replaces files in its folder, so it "
                "will not use it: pass another --run-name or --out-dir")

    def lock(self, wait: bool = False):
        """``with run.lock(): ...``: hold ``.lock`` (pid, host) so no second process works in this
        folder; a lock of a killed process is free again (flows/run_lock.py)."""
        from flows.run_lock import RunLock

        return RunLock(self.root, wait=wait)

    def saved_config_json(self) -> str:
        """The config the folder was made with, its paths as given (config.json in older folders)."""
        for path in (self.local_config_file, self.config_file):
            if path.exists():
                return path.read_text()
        raise FileNotFoundError(f"{self.config_file} not found: is {self.root} a run folder?")

    def report_paths(self) -> tuple[Path, str]:
        """(folder the report goes in, its base name): report.md and report/*.png."""
        return self.root, REPORT_NAME


def _plain(value: Any) -> Any:
    """Paths as strings, tuples as lists: what JSON holds."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return os.fspath(value) if isinstance(value, os.PathLike) else value


def _without_secrets(config_json: str) -> str:
    """The config JSON with endpoint URLs redacted and secret-named values hidden."""
    return json.dumps(redact_config(json.loads(config_json)), indent=2)
