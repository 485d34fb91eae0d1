"""Export a selected example table: Parquet shards, JSONL, an HF dataset on disk, a dataset card.

    from pipelines.export import export_dataset, push_to_hub
    paths = export_dataset(table, "runs/x/dataset", card_info={"config": cfg, "stages": records})
    push_to_hub(paths["dir"], "me/my-dataset")      # token from HF_TOKEN; private by default

Layout of ``out_dir``::

    parquet/part-00000.parquet ...  the rows, shard_rows per shard (pipelines.shards.read_shards)
    data.jsonl                      the same rows, one JSON object per line (keys sorted)
    hf/                             datasets.Dataset.save_to_disk (datasets.load_from_disk)
    test/{parquet,data.jsonl,hf}    with ``test_fraction`` > 0: the held-out split in the same forms
                                    (the top-level files are then the train split)
    README.md                       the dataset card's prose, no YAML header

Every row carries the table's columns plus ``messages`` (TRL chat format). The same table gives
byte-identical files: no timestamps, Parquet without statistics, the HF fingerprint a hash of
the content -- a resumed run compares equal to an uninterrupted one. Files are written to a
temp name and renamed, so a killed export never leaves a half-written file.

The same module writes an example table for other tools in any format :mod:`pipelines.io`
reads (:func:`write_examples`, :func:`to_records`) and rejects files (:func:`write_rejects`):
one writer module, every write atomic.

The card holds no YAML because ``datasets``' ``push_to_hub`` writes the metadata header
(features, splits, data files) itself; :func:`push_to_hub` puts the prose under that header.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
import pyarrow as pa

from pipelines.hf_disk import atomic_save_to_disk, save_parquet_shards_to_disk
from pipelines.io import FORMATS
from pipelines.redact import redact_config, redact_text
from pipelines.report import (
    decontamination_section,
    markdown_table,
    plot_score,
    score_columns,
    score_summary,
    selection_composition,
    stage_counts_table,
    usage_section,
)
from pipelines.schema import CORE_COLUMNS, user_content, with_messages
from pipelines.shards import (
    SHARD_GLOB,
    atomic_write_jsonl,
    atomic_write_parquet,
    atomic_write_text,
)

if TYPE_CHECKING:
    import datasets

MESSAGES_DTYPE = pl.List(pl.Struct({"role": pl.Utf8, "content": pl.Utf8}))
CARD_KEYS = {"title", "description", "generators", "models", "config", "stages", "fingerprint", "scores"}


_SLICE_ROWS = 20_000  # rows turned into messages / JSON lines at a time (bounds the Python objects)


def export_table(table: pl.DataFrame) -> pl.DataFrame:
    """The rows as exported: the table's columns plus ``messages`` (typed even when empty)."""
    parts = [with_messages(table.slice(lo, _SLICE_ROWS)).with_columns(pl.col("messages").cast(MESSAGES_DTYPE))
             for lo in range(0, max(table.height, 1), _SLICE_ROWS)]  # an empty table: one empty part
    return pl.concat(parts, how="vertical", rechunk=False)


def split_train_test(table: pl.DataFrame, test_fraction: float, seed: int = 0) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A seeded train/test split: the ``round(test_fraction * rows)`` rows whose hash of
    (seed, id) is smallest are the test split. Depends only on the ids and the seed, so a rerun
    (or the same rows in another order) splits the same way; each split keeps the table's order."""
    if not 0 <= test_fraction < 1:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    n_test = round(test_fraction * table.height)
    if n_test == 0:
        return table, table.clear()
    keys = pl.Series([hashlib.sha256(f"{seed}:{i}".encode()).hexdigest() for i in table["id"]])
    is_test = keys.rank("ordinal") <= n_test
    return table.filter(~is_test), table.filter(is_test)


def export_dataset(
    table: pl.DataFrame,
    out_dir: str | Path,
    *,
    card_info: Mapping[str, Any],
    shard_rows: int = 5000,
    selected: pl.DataFrame | None = None,
    test_fraction: float = 0.0,
    seed: int = 0,
) -> dict[str, Path]:
    """Write Parquet shards, JSONL, the HF dataset and README.md into ``out_dir``.

    ``selected``: every row that entered selection, with ``keep`` -- the card then shows what the
    selection kept and dropped per source and task type, with kept-vs-dropped score histograms
    (``plots/<score>.png``).

    ``card_info`` (all optional): title, description, generators (list or dict), models (dict),
    config (dict, or TOML/YAML text), stages (stage records), fingerprint, scores (score column ->
    definition). Unknown keys are an error so a typo does not silently drop provenance.

    ``test_fraction`` > 0 holds out a seeded test split (:func:`split_train_test`) under ``test/``.
    Returns {"dir", "parquet", "jsonl", "hf", "card"} (+ "test_parquet", "test_jsonl", "test_hf")
    -> paths.
    """
    if shard_rows <= 0:
        raise ValueError(f"shard_rows must be positive, got {shard_rows}")
    unknown = set(card_info) - CARD_KEYS
    if unknown:
        raise ValueError(f"unknown card_info keys {sorted(unknown)}; expected some of {sorted(CARD_KEYS)}")
    out = Path(out_dir)
    rows = export_table(table)
    train, test = split_train_test(rows, test_fraction, seed)
    paths = {"dir": out, **_write_split(train, out, shard_rows)}
    if test_fraction > 0:
        paths |= {f"test_{k}": v for k, v in _write_split(test, out / "test", shard_rows).items()}
    plots = {}
    if selected is not None and "keep" in selected.columns:
        plots = {c: plot_score(selected, c, out / "plots" / f"{c}.png").relative_to(out).as_posix()
                 for c in score_columns(selected)}
    card = out / "README.md"
    splits = {"train": train.height, "test": test.height} if test_fraction > 0 else None
    atomic_write_text(card, dataset_card_text(rows, card_info, selected, plots, splits=splits))
    return {**paths, "card": card}


def _write_split(rows: pl.DataFrame, out: Path, shard_rows: int) -> dict[str, Path]:
    """One split as Parquet shards, JSONL and an HF dataset under ``out``."""
    writer = SplitWriter(out, shard_rows)
    try:
        writer.add(rows)
    except BaseException:
        writer.abort()
        raise
    return writer.close(rows.clear())


class SplitWriter:
    """One split under ``out`` from rows that arrive in pieces (the whole table, or batch by batch
    in :mod:`pipelines.export_stream`): Parquet shards as they fill, JSON lines into a temp file
    renamed at close, then the HF dataset streamed from the shards."""

    def __init__(self, out: Path, shard_rows: int):
        from pipelines.stream_io import ShardWriter

        self.out = out
        self.parquet = ShardWriter(out / "parquet", shard_rows)
        out.mkdir(parents=True, exist_ok=True)
        self.jsonl = out / "data.jsonl"
        fd, self._tmp = tempfile.mkstemp(dir=out, prefix=".data.jsonl.", suffix=".tmp")
        self._f = os.fdopen(fd, "w", encoding="utf-8", newline="")
        self.schema: pl.DataFrame | None = None

    def add(self, rows: pl.DataFrame) -> None:
        if self.schema is None:
            self.schema = rows.clear()
        self.parquet.add(rows)
        for lo in range(0, rows.height, _SLICE_ROWS):  # bounds the Python strings of one write
            self._f.write("".join(_json_line(r) for r in rows.slice(lo, _SLICE_ROWS).iter_rows(named=True)))

    def close(self, empty: pl.DataFrame) -> dict[str, Path]:
        """Finish the files; ``empty`` (the exported schema) types them when no rows came."""
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        os.replace(self._tmp, self.jsonl)
        if self.parquet.rows == 0:
            self.parquet.add(empty)
        self.parquet.close()  # an empty split still gets one shard (its schema)
        hf = self.out / "hf"
        _save_hf_from_shards(self.schema if self.schema is not None else empty, self.out / "parquet", hf)
        return {"parquet": self.out / "parquet", "jsonl": self.jsonl, "hf": hf}

    def abort(self) -> None:
        if not self._f.closed:
            self._f.close()
        Path(self._tmp).unlink(missing_ok=True)


def _save_hf_from_shards(rows: pl.DataFrame, parquet_dir: Path, hf_dir: Path) -> None:
    """The HF dataset streamed from the Parquet shards just written, a record batch at a time (not
    from the in-memory table, and not through a memory-mapped copy, whose pages all become resident
    on save): the same features and rows as :func:`to_hf_dataset`."""
    import datasets

    schema = pa.schema([pa.field(f.name, _plain_type(f.type)) for f in rows.head(0).to_arrow().schema])
    shards = sorted(parquet_dir.glob(SHARD_GLOB))
    save_parquet_shards_to_disk(shards, datasets.Features.from_arrow_schema(schema), hf_dir)


def _json_line(row: dict[str, Any]) -> str:
    # NaN/inf are not JSON; Parquet and the HF dataset keep them, JSONL says null.
    clean = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}
    # Keys in column order (fixed by the table's schema), so lines read like the table.
    return json.dumps(clean, ensure_ascii=False, default=str) + "\n"


def _plain_type(t: pa.DataType) -> pa.DataType:
    """large_string -> string, large_list -> list (recursively): the usual HF feature types."""
    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.string()
    if pa.types.is_large_list(t) or pa.types.is_list(t) or pa.types.is_list_view(t):
        return pa.list_(_plain_type(t.value_type))
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, _plain_type(f.type), f.nullable) for f in t])
    return t


def to_hf_dataset(rows: pl.DataFrame) -> datasets.Dataset:
    """An in-memory ``datasets.Dataset`` of the exported rows (fingerprint = hash of the content)."""
    import datasets

    arrow = rows.to_arrow()
    schema = pa.schema([pa.field(f.name, _plain_type(f.type)) for f in arrow.schema])
    return datasets.Dataset.from_polars(rows, features=datasets.Features.from_arrow_schema(schema))


# ---------------------------------------------------------------------------------------------
# Writers for exchange with other tools (pipelines.io reads these formats back; the pipeline's
# own shards use pipelines.shards). Every file is written to a temp name and renamed.


def to_records(table: pl.DataFrame, fmt: str) -> list[dict[str, Any]]:
    """Example rows as records of ``fmt`` (one of pipelines.io.FORMATS).

    Other formats carry the meta keys as extra fields (read back into meta), so alpaca and qa
    round-trip whole; ``messages`` and ``prompt_completion`` fold the context into the user turn
    (schema.user_content), so reading them back gives context "" and a different id.
    """
    out = []
    for row in table.select(CORE_COLUMNS).iter_rows(named=True):
        i, c, r = row["instruction"], row["context"], row["response"]
        meta = json.loads(row["meta"] or "{}")
        if fmt == "example":
            out.append({**row, "meta": meta})
            continue
        if fmt == "alpaca":
            rec = {"instruction": i, "input": c, "output": r}
        elif fmt == "qa":
            rec = {"question": i, "context": c, "answer": r}
        elif fmt == "messages":
            rec = {
                "messages": [
                    {"role": "user", "content": user_content(i, c)},
                    {"role": "assistant", "content": r},
                ]
            }
        elif fmt == "prompt_completion":
            rec = {"prompt": user_content(i, c), "completion": r}
        else:
            raise ValueError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
        out.append({**{k: v for k, v in meta.items() if k not in rec}, **rec})
    return out


def write_examples(table: pl.DataFrame, path: Path | str, fmt: str = "example") -> Path:
    """Write an example table atomically as ``.jsonl``, ``.json`` (array), ``.parquet``, or a saved
    HF dataset (any other path: a folder)."""
    path = Path(path)
    if path.suffix == ".parquet":
        atomic_write_parquet(
            pl.DataFrame(to_records(table, fmt)) if fmt != "example" else table.select(CORE_COLUMNS), path
        )
    elif path.suffix == ".jsonl":
        atomic_write_jsonl(to_records(table, fmt), path)
    elif path.suffix == ".json":
        atomic_write_text(path, json.dumps(to_records(table, fmt), ensure_ascii=False, indent=1) + "\n")
    else:
        from datasets import Dataset

        records = to_records(table, fmt) if fmt != "example" else table.select(CORE_COLUMNS).to_dicts()
        atomic_save_to_disk(Dataset.from_list(records), path)
    return path


def write_rejects(rejects: list[dict[str, Any]], path: Path | str) -> Path:
    """Write rejects as JSONL atomically (an empty list still writes an empty file, so a run shows 0)."""
    path = Path(path)
    atomic_write_jsonl(rejects, path)
    return path


def _config_text(config: Any) -> tuple[str, str]:
    """(code-fence language, text) of the run configuration."""
    if isinstance(config, str):
        return ("toml" if re.search(r"^\s*\[", config, re.M) else "yaml"), redact_text(config.strip())
    import yaml

    return "yaml", yaml.safe_dump(redact_config(config), sort_keys=False, allow_unicode=True).strip()


def _generators(rows: pl.DataFrame, info: Mapping[str, Any]) -> str:
    """The generators' settings (when given) and the rows per ``source``."""
    given, text = info.get("generators"), ""
    if isinstance(given, Mapping):
        text = markdown_table([{"generator": k, "settings": _short(v)} for k, v in given.items()]) + "\n"
    elif given:
        text = "".join(f"- {g}\n" for g in given) + "\n"
    if "source" not in rows.columns or rows.height == 0:
        return text or "_(not recorded)_\n"
    # The source column names the generator and its parameters for every row.
    counts = rows.group_by("source").len().sort(["len", "source"], descending=[True, False])
    return text + "Rows per source:\n\n" + markdown_table(
        [{"source": r["source"] or "(empty)", "rows": r["len"]} for r in counts.head(20).to_dicts()]
    )


def _short(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def _selection_card(selected: pl.DataFrame, plots: Mapping[str, str]) -> list[str]:
    kept = int(selected["keep"].sum())
    lines = ["## What selection kept", "", f"{kept} of {selected.height} rows kept.", ""]
    composition = selection_composition(selected)
    if composition:
        lines += ["Kept and dropped rows per source and task type:", "",
                  markdown_table(composition, ["by", "value", "kept", "dropped"])]
    for column, png in plots.items():
        lines += [f"![{column}, kept vs dropped]({png})", ""]
    return lines


def usage_card(stages: list[Mapping[str, Any]]) -> list[str]:
    """The card's token section: model tokens, calls, retries and failures per stage and in
    total (cost when model.price_per_million is set), from the stage records' ``usage``. No
    seconds: the card depends on what was made, not on how long it took. The tokens are what the
    run spent, attempts cut short by a crash included, so after a resumed crash this section (and
    only this one) differs from an undisturbed run's card."""
    return usage_section(stages, title="## Model tokens used", with_seconds=False)


def dataset_card_text(
    rows: pl.DataFrame,
    info: Mapping[str, Any],
    selected: pl.DataFrame | None = None,
    plots: Mapping[str, str] | None = None,
    splits: Mapping[str, int] | None = None,
) -> str:
    """The card's prose: what the data is, its splits, how it was made (models per stage, generator
    settings, score definitions, counts per stage and per selection step), what selection kept
    (when ``selected`` is given), score summary, config.

    Deterministic in (rows, info): stage timings are left out (they belong to the run report).
    """
    title = info.get("title") or "Instruction-tuning dataset"
    lines = [f"# {title}", ""]
    if info.get("description"):
        lines += [str(info["description"]).strip(), ""]
    cols = ", ".join(f"`{c}`" for c in rows.columns)
    notes = [
        "`messages` is the chat form of each row (TRL's conversational format: a user turn with "
        "the instruction and its context, then the assistant's response)"
    ]
    if "meta" in rows.columns:
        notes.append("`meta` is a JSON object stored as a string")
    if any(c.startswith("score_") for c in rows.columns):
        notes.append("`score_*` columns are the selection scores")
    if "keep" in rows.columns:
        notes.append("`keep` and the reason columns record what selection decided")
    lines += [
        f"{rows.height} examples. Columns: {cols}.",
        "",
        "; ".join(notes) + ".",
        "",
        "## Files",
        "",
        f"- `parquet/{SHARD_GLOB}`: the rows in Parquet shards",
        "- `data.jsonl`: the same rows as JSON lines",
        '- `hf/`: `datasets.load_from_disk("hf")`',
        "",
    ]
    if splits:
        lines[-1:] = [
            "- `test/`: the held-out split, in the same three forms (the files above are the train split)",
            "",
            "## Splits",
            "",
            markdown_table([{"split": k, "rows": v} for k, v in splits.items()]),
            "A seeded split on the row ids (`export.test_fraction`, `run.seed`): a rerun splits the same way.",
            "",
        ]
    lines += ["## How it was made", "", "Generators:", "", _generators(rows, info)]
    models = info.get("models")
    if models:
        lines += ["Models, per stage:", ""]
        items = models.items() if isinstance(models, Mapping) else ((None, m) for m in models)
        lines += [f"- {k}: `{v}`" if k else f"- `{v}`" for k, v in items] + [""]
    if info.get("fingerprint"):
        lines += [f"Config fingerprint: `{info['fingerprint']}`", ""]
    if info.get("scores"):
        lines += ["Scores:", "", markdown_table([{"column": f"`{k}`", "definition": v}
                                                 for k, v in info["scores"].items()])]
    stages = info.get("stages") or []
    if stages:
        lines += ["## Counts per stage", "", stage_counts_table(stages, with_seconds=False)]
        for stage in stages:
            if stage.get("stage") == "select" and stage.get("steps"):
                cols_ = ["step", "name", "rows_in", "rows_out", "dropped", "detail"]
                lines += ["Selection steps:", "", markdown_table(stage["steps"], cols_)]
        lines += usage_card(stages)
        lines += decontamination_section(stages)
    if selected is not None and "keep" in selected.columns:
        lines += _selection_card(selected, plots or {})
    summary = score_summary(rows)
    if summary:
        lines += [
            "## Score summary",
            "",
            "Over the exported rows (count = finite values):",
            "",
            markdown_table(summary),
        ]
    if info.get("config") is not None:
        lang, text = _config_text(info["config"])
        lines += ["## Configuration", "", f"```{lang}", text, "```", ""]
    return redact_text("\n".join(lines).rstrip() + "\n")  # an endpoint URL anywhere: no credentials


def push_to_hub(
    export: str | Path | datasets.Dataset,
    repo_id: str,
    *,
    private: bool = True,
    token: str | None = None,
    card_text: str | None = None,
) -> dict[str, Any]:
    """Upload an export folder (or a Dataset) to a Hub dataset repo, then put the card prose on it.

    The token comes from ``token`` or the environment (``HF_TOKEN``, else a saved ``hf auth
    login``); it is passed to the Hub client only -- never printed, logged or written. The repo is
    created private by default, and pushing with ``private=True`` to an existing *public* repo is
    refused rather than publishing the data. The card prose is ``card_text``, else the export's
    README.md. Returns {"repo_id", "url", "commit", "private"} (JSON-able, no token).
    """
    import datasets
    from huggingface_hub import CommitOperationAdd, DatasetCard, HfApi, get_token

    token = token or get_token()
    if not token:
        raise RuntimeError(
            "pushing to the Hub needs a token: set HF_TOKEN (a write token) in the environment"
        )
    if isinstance(export, datasets.Dataset):
        ds = export
    else:
        folder = Path(export)
        ds = datasets.load_from_disk(str(folder / "hf"))
        if (folder / "test" / "hf").exists():  # export.test_fraction: push both splits
            ds = datasets.DatasetDict(train=ds, test=datasets.load_from_disk(str(folder / "test" / "hf")))
        if card_text is None and (folder / "README.md").exists():
            card_text = (folder / "README.md").read_text(encoding="utf-8")

    api = HfApi(token=token, library_name="instruct-forge")
    repo_id = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True).repo_id
    if private and not api.repo_info(repo_id, repo_type="dataset").private:
        raise RuntimeError(
            f"{repo_id} exists and is public; refusing to push with private=True "
            "(make it private on the Hub, or pass private=False to publish)"
        )
    # Two commits; a rerun after either fails pushes both again: datasets writes the same shard
    # names (replacing, not adding, files) and the card commit replaces README.md.
    rerun = "run the same command again to finish the push (it replaces, never duplicates, files)"
    try:
        commit = ds.push_to_hub(repo_id, private=private, token=token, commit_message="Upload dataset")
    except Exception as e:
        raise RuntimeError(f"pushing the dataset to {repo_id} failed ({type(e).__name__}: {e}); {rerun}") from e
    if card_text:
        # datasets just wrote README.md with the YAML header (features, splits, data files); keep
        # that header and replace the body with our prose.
        try:
            readme = api.hf_hub_download(repo_id, "README.md", repo_type="dataset", revision=commit.oid)
            card = DatasetCard(Path(readme).read_text(encoding="utf-8"))
            card.text = card_text
            commit = api.create_commit(
                repo_id,
                operations=[
                    CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=str(card).encode("utf-8"))
                ],
                commit_message="Dataset card",
                repo_type="dataset",
                parent_commit=commit.oid,
            )
        except Exception as e:
            raise RuntimeError(
                f"pushing the dataset card to {repo_id} failed ({type(e).__name__}: {e}); the data is on "
                f"the Hub (commit {commit.oid}) without the card's prose; {rerun}") from e
    return {
        "repo_id": repo_id,
        "url": f"{api.endpoint}/datasets/{repo_id}",
        "commit": commit.oid,
        "private": private,
    }
