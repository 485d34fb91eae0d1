"""Run configuration: pydantic models with checks, loaded from TOML or YAML (safe-loaded).

Validated once per process (``load_config``) and handed around as a typed ``PipelineConfig``.
The catalogues it checks against live with their owners: score names in
``instruct_selectors.score``, backends in ``pipelines.llm``, training methods in
``pipelines.finetune.methods``.

Every option of ``python -m flows.build_dataset`` lives here; the command line overrides the
file with ``--set section.key=value`` (values parsed as YAML scalars/lists) or named flags.
Unknown keys are errors, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

import yaml
from instruct_selectors.policy_steps import Decontaminate, Filter, SelectionStep, parse_steps
from instruct_selectors.scores.catalogue import column_owner
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from flows.config_choose import ProxyConfig, candidate_columns, last_top_k
from flows.config_score import ScoreConfig
from flows.config_train import TrainConfig
from flows.default_selection import default_steps, narrowed
from pipelines.llm import BACKENDS

REPO = Path(__file__).resolve().parents[1]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RunConfig(_Section):
    out_dir: str = Field("runs", description="folder that holds run folders")
    name: str | None = Field(None, description="run folder name; default: run-<config fingerprint>")
    seed: int = Field(0, description="seed for sampling, selection and training")
    shard_size: int = Field(64, gt=0, description="rows per shard (unit of resume and scale-out)")

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str | None) -> str | None:
        """A folder name inside out_dir: no path (``../x``, ``/abs``), no ``.`` or ``..``."""
        if name is not None and (not re.fullmatch(r"[A-Za-z0-9._-]+", name) or name in (".", "..")):
            raise ValueError(f"run.name {name!r} must be a plain folder name (letters, digits, '.', '_', '-'; "
                             "not '.' or '..'): the run folder is <run.out_dir>/<run.name>")
        return name


class IOConfig(_Section):
    """How input files are read (pipelines/io.py)."""

    strict_encoding: bool = Field(False, description="stop at the first byte that is not UTF-8 in an input "
                                  "file; default: that line or row becomes a reject and the rest is read")
    max_line_bytes: int = Field(64 << 20, gt=0, description="a longer input line (JSON lines) is a reject; "
                                "bounds the memory one line can take")
    check_rows: int = Field(1000, gt=0, description="rows of each input validated before the run starts")


class Price(_Section):
    """Money per million tokens (any currency), for the token tables' cost column."""

    prompt: float = Field(0.0, ge=0)
    completion: float = Field(0.0, ge=0)


class ModelConfig(_Section):
    backend: Literal[BACKENDS] = "auto"
    model: str = Field("embedded", description="'embedded' (SmolLM2-135M-Instruct), 'tiny', a local folder, or the endpoint's model name")
    base_url: str | None = Field(None, description="openai backend: endpoint URL")
    generation_batch_size: int = Field(16, gt=0)
    generation_engine: Literal["auto", "hf", "ct2"] = Field(
        "auto", description="hf backend: who generates; auto = CTranslate2 int8 for the embedded model "
        "on CPU (one batch per core; benchmarks.generation), else transformers")
    scoring_engine: Literal["auto", "hf", "ct2"] = Field(
        "auto", description="hf backend: who computes the log-prob-only scores (IFD, CoLoR, ctx_loss); "
        "ct2 = CTranslate2 int8; target_sim/GOT-D hidden states stay on transformers; auto = ct2 for the "
        "embedded model (and CoLoR's conditional model) on CPU, else hf (benchmarks.scorer)")
    hidden_dtype: Literal["auto", "float32", "bfloat16"] = Field("auto", description="hf backend: precision of the "
        "hidden-state scoring pass (target_sim, otd); auto = bfloat16 on ct2's CPU path with native bf16, else float32")
    token_budget: int = Field(4096, gt=0, description="scoring: tokens per batch (rows x longest row)")
    max_length: int = Field(512, gt=8, description="scoring/training: truncate rows to this many tokens")
    threads: int | None = Field(None, gt=0, description="torch CPU threads per process (None: all cores, "
                                "divided among local Dask workers); 1 helps on a machine shared with other jobs")
    price_per_million: Price | None = Field(None, description="prices of this model's tokens: stage records, "
                                            "report and card show a cost (None: tokens only)")


class TaxonomyConfig(_Section):
    enabled: bool = True
    path: str = "data/taxonomy.yaml"
    max_disciplines: int | None = Field(2, description="use only the first N disciplines (None: all)")
    subjects_per_discipline: int = Field(1, gt=0)
    sessions_per_syllabus: int = Field(4, gt=0)
    questions_per_syllabus: int = Field(4, gt=0)
    max_tokens: int = Field(256, gt=0)


class TextConfig(_Section):
    enabled: bool = True
    path: str = "data/passages.jsonl"
    task_types: list[str] = Field(default_factory=lambda: ["qa", "ynqa"])
    samples_per_passage: int = Field(1, gt=0)
    mode: Literal["chat", "bonito"] = "chat"
    max_passages: int | None = None
    max_tokens: int = Field(192, gt=0)


class GenerateConfig(_Section):
    taxonomy: TaxonomyConfig = TaxonomyConfig()
    text: TextConfig = TextConfig()
    inputs: list[str] = Field(default_factory=list, description="existing datasets to add (JSONL, Parquet, Alpaca, messages, HF on disk)")
    custom: list[str] = Field(default_factory=list, description="your own generators by import path "
                              "('mypkg.gen:MY_GENERATOR', see flows/stages/generate_custom.py)")
    options: dict[str, dict[str, Any]] = Field(default_factory=dict, description="options per custom generator name")


class DecontaminateConfig(_Section):
    """Eval sets to check for leakage (instruct_selectors/decontam.py): rows sharing a word
    n-gram with any of them get contaminated_by and are dropped first (step decontaminate)."""

    against: list[str] = Field(default_factory=list, description="eval set files (any format pipelines.io reads)")
    n: int = Field(13, ge=1, description="words per n-gram (13: the usual default)")


class SelectConfig(_Section):
    decontaminate: DecontaminateConfig = DecontaminateConfig()
    custom: list[str] = Field(default_factory=list, description="your own row filters by import path "
                              "('mypkg.filters:is_english': (row) -> bool | (bool, reason)); run first")
    steps: list[SelectionStep] = Field(
        default_factory=lambda: parse_steps(default_steps()),
        description="selection steps in order: dedup -> filters -> rank -> diversify",
    )
    auto: list[str] | Literal[False] | None = Field(
        None, description="rankings to try against the steps' own, e.g. ['target_sim', 'color', "
        "'target_sim+color', 'longest']: the choose stage proxy-trains each and keeps a winner only beyond the "
        "random arms' spread (flows/config_choose.py); unset: ['longest'] when the target holds out at least "
        "30 rows to grade on (the guard); false: off")
    proxy: ProxyConfig = ProxyConfig()

    @model_validator(mode="after")
    def _decontaminate_needs_eval_sets(self):
        if any(isinstance(step, Decontaminate) for step in self.steps) and not self.decontaminate.against:
            raise ValueError("a decontaminate step needs select.decontaminate.against (the eval set files)")
        return self

    def steps_to_run(self, steps: list[SelectionStep] | None = None, held_out: bool = False) -> list[SelectionStep]:
        """``steps`` (default: select.steps), with decontamination first when eval sets are given
        (or target rows are held out: ``held_out``) and no step places it."""
        steps = list(self.steps if steps is None else steps)
        if self.custom and not any(isinstance(step, Filter) for step in steps):
            steps = [Filter(), *steps]
        if (self.decontaminate.against or held_out) and not any(isinstance(step, Decontaminate) for step in steps):
            steps = [Decontaminate(), *steps]
        return steps

    @field_validator("steps", mode="before")
    @classmethod
    def _parse_steps(cls, v: Any) -> list[SelectionStep]:
        """Config's ``{"top_k": {...}}`` mappings become step models here, once (errors name the step)."""
        if not isinstance(v, list | tuple):
            raise ValueError(f"write select.steps as a list of one-key mappings, got {type(v).__name__}")
        return parse_steps(v)

    @field_serializer("steps")
    def _write_steps(self, steps: list[SelectionStep]) -> list[dict[str, Any]]:
        return [step.spec() for step in steps]


class RefusalAwareConfig(_Section):
    """R-Tuning (Zhang et al. 2023; generators/refusal.py): the model answers each kept row
    greedily; rows it gets right end "... I am sure.", the others "... I am unsure."."""

    enabled: bool = Field(False, description="run the refusal_aware transform after select")
    metric: Literal["f1", "exact"] = Field("f1", description="how the model's answer is judged against the response (SQuAD-normalised)")
    threshold: float = Field(0.5, gt=0, le=1, description="score >= threshold counts as known")
    max_tokens: int = Field(64, gt=0, description="tokens per greedy answer")


class TransformConfig(_Section):
    refusal_aware: RefusalAwareConfig = RefusalAwareConfig()


class ExportConfig(_Section):
    push_to_hub: str | None = Field(None, description="repo id to push to (token from HF_TOKEN)")
    private: bool = True
    include_dropped: bool = Field(False, description="export every row with its keep/reason columns")
    test_fraction: float = Field(0.0, ge=0, lt=1, description="hold out this share of rows as a seeded test split (test/ beside the train files; both pushed)")


class PipelineConfig(_Section):
    run: RunConfig = RunConfig()
    io: IOConfig = IOConfig()
    model: ModelConfig = ModelConfig()
    generate: GenerateConfig = GenerateConfig()
    score: ScoreConfig = ScoreConfig()
    select: SelectConfig = SelectConfig()
    transform: TransformConfig = TransformConfig()
    export: ExportConfig = ExportConfig()
    train: TrainConfig = TrainConfig()

    _notes: list[str] = PrivateAttr(default_factory=list)

    @model_validator(mode="after")
    def _steps_use_computed_scores(self):
        """A selection step may only rank or filter on a score this run computes.

        A *default* step whose score is turned off (``--scores ifd,ctx_loss``) is dropped with a
        note (a default rank fusion keeps the scores that are computed), so flags compose; a step
        the user wrote on such a score is an error."""
        owners, defaults = column_owner(self.score.custom), parse_steps(default_steps())
        kept = []
        for i, step in enumerate(self.select.steps, 1):
            name = step.name
            needed = [(c, owners[c].name) for c in step.reads() if c in owners]
            missing = [(c, n) for c, n in needed if n not in self.score.scores]
            default = step in defaults
            if missing and default and len(missing) < len(getattr(step, "fuse", ())):
                step = narrowed(step, {c for c, _ in missing})  # a default rank fusion keeps the scores computed
                self._notes.append(f"default selection step {name} ranks by {', '.join(step.reads())}: "
                                   f"{', '.join(sorted({n for _, n in missing}))} not computed")
            elif missing:
                column, score = missing[0]
                if default:
                    self._notes.append(f"default selection step {name}({column}) skipped: score "
                                       f"{score!r} is not computed (scores: {', '.join(self.score.scores)})")
                    continue
                raise ValueError(f"select.steps[{i}] ({name}) uses {column}, but score.scores does not "
                                 f"include {score!r} (scores: {', '.join(self.score.scores)})")
            kept.append(step)
        self.select.steps = kept
        return self

    @model_validator(mode="after")
    def _auto_can_run(self):
        """select.auto: every candidate ranks by computed scores, a top_k step to vary, target rows held out."""
        if self.select.auto == []:
            self.select.auto = False  # an empty list says off, as false does
        if not self.select.auto:
            return self
        self.select.auto = list(dict.fromkeys(self.select.auto))
        owners = column_owner(self.score.custom)
        for candidate in self.select.auto:
            candidate_columns(candidate, owners, self.score.scores)
        last_top_k(self.select.steps)
        if not self.score.target or self.score.target_holdout == 0:
            raise ValueError("select.auto grades candidates on held-out target rows: set score.target and "
                             "score.target_holdout > 0")
        return self

    @model_validator(mode="after")
    def _control_column_is_computed(self):
        """train.control_tokens.column must be a scalar score this run computes."""
        control = self.train.control_tokens
        if control is None:
            return self
        owners = {c: s for c, s in column_owner(self.score.custom).items() if s.scalar}
        owner = owners.get(control.column)
        if owner is None:
            raise ValueError(f"train.control_tokens.column {control.column!r} is not a score column "
                             f"(one of: {', '.join(owners)})")
        if owner.name not in self.score.scores:
            raise ValueError(f"train.control_tokens uses {control.column}, but score.scores does not "
                             f"include {owner.name!r} (scores: {', '.join(self.score.scores)})")
        return self

    def notes(self) -> list[str]:
        """What validation adapted (e.g. default steps skipped), for the run log."""
        return list(self._notes)

    def fingerprint(self) -> str:
        """Hash of everything that changes the output (not the run name or output folder)."""
        data = self.model_dump(mode="json")
        data["run"].pop("name"), data["run"].pop("out_dir")
        data["model"].pop("threads")  # where the work runs, not what it produces
        data["model"].pop("price_per_million")  # what it costs, not what it produces
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]

    def run_dir(self) -> Path:
        return resolve_path(self.run.out_dir) / (self.run.name or f"run-{self.fingerprint()}")


class ConfigError(ValueError):
    pass


def resolve_path(path: str | Path) -> Path:
    """Relative paths are taken from the working directory when they exist there, else from the repo."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p.resolve()
    return REPO / p if (REPO / p).exists() else Path.cwd() / p


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: not valid {'TOML' if path.suffix == '.toml' else 'YAML'}: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return data


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """``section.key=value`` -> data["section"]["key"] = yaml scalar/list of value."""
    if "=" not in assignment:
        raise ConfigError(f"--set expects section.key=value, got {assignment!r}")
    key, raw = assignment.split("=", 1)
    parts = key.strip().split(".")
    node = data
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: {p} is not a section")
    node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> PipelineConfig:
    data = _read_file(Path(path)) if path else {}
    for o in overrides:
        apply_override(data, o)
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as e:
        where = f" in {path}" if path else ""
        lines = [f"  {'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors()]
        raise ConfigError(f"invalid configuration{where}:\n" + "\n".join(lines)) from None
