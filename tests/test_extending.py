"""Extending the package (issue 36): a new built-in score is one file plus its line in the scores'
BUILTIN, a new selection step one class in one file plus its line in the steps' BUILTIN. Each is
written here as a temporary module, listed, and used by the config and the engine unchanged."""

from __future__ import annotations

import importlib
import sys
import textwrap

import numpy as np
import polars as pl

STEP_FILE = '''
"""every_nth: keep every n-th row entering, in rank order (a toy step)."""

import numpy as np
from instruct_selectors.steps.base import Compact, Result, SelectionStep
from pydantic import Field


class EveryNth(SelectionStep):
    name = "every_nth"
    phase = 2
    n: int = Field(2, ge=1)

    def label(self) -> str:
        return f"{self.name}({self.n})"

    def apply(self, at: int, c: Compact, rows: np.ndarray, res: Result) -> tuple[np.ndarray, str]:
        return rows[:: self.n], f"n={self.n}"
'''

SCORE_FILE = '''
"""chars: the response's length in characters (a toy score: formula and declaration in one file)."""

import numpy as np
from instruct_selectors.scores.base import Score


def chars(responses) -> np.ndarray:
    return np.array([len(r) for r in responses], dtype=float)


def _compute(inputs):
    return chars(inputs.table["response"].to_list())


CHARS = Score(name="chars", column="score_chars", compute=_compute, definition="characters in the response")
'''


def _module(tmp_path, monkeypatch, name: str, text: str):
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(text))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop(name, None)
    importlib.invalidate_caches()
    return importlib.import_module(name)


def _table(n: int = 9) -> pl.DataFrame:
    from pipelines.schema import make_example, to_table

    return to_table([make_example(f"Question {i}?", "x" * (i + 1), source="t") for i in range(n)])


def test_a_new_selection_step_is_one_class_in_one_file_and_its_builtin_line(tmp_path, monkeypatch):
    from instruct_selectors import steps
    from instruct_selectors.policies import select
    from instruct_selectors.policy_steps import parse_steps

    mod = _module(tmp_path, monkeypatch, "every_nth_step", STEP_FILE)
    monkeypatch.setattr(steps, "BUILTIN", (*steps.BUILTIN, mod.EveryNth))
    table = _table().with_columns(pl.Series("score_x", np.arange(9, dtype=float)))
    out, summary = select(table, [{"top_k": {"column": "score_x", "k": 6}}, {"every_nth": {"n": 3}}])
    kept = out.filter(pl.col("keep")).sort("select_rank")
    # top_k ranks 8, 7, ..., 3; every third of that order: 8 and 5.
    assert kept["score_x"].to_list() == [8.0, 5.0]
    assert summary["name"].to_list() == ["top_k(score_x, k=6)", "every_nth(3)"]
    assert set(out.filter(~pl.col("keep") & (pl.col("score_x") >= 3))["dropped_by"]) == {"every_nth(3)"}
    assert parse_steps([{"every_nth": {}}])[0].n == 2


def test_a_new_builtin_score_is_one_file_and_its_builtin_line(tmp_path, monkeypatch):
    from instruct_selectors.score import score_rows
    from instruct_selectors.scores import catalogue

    from flows.config import load_config

    mod = _module(tmp_path, monkeypatch, "chars_score", SCORE_FILE)
    monkeypatch.setattr(catalogue, "BUILTIN", (*catalogue.BUILTIN, mod.CHARS))
    cfg = load_config(overrides=["score.scores=[chars]", "select.steps=[{top_k: {column: score_chars, k: 2}}]"])
    scored, rejects = score_rows(_table(), cfg.score.specs(), {})
    assert scored["score_chars"].to_list() == [float(i + 1) for i in range(9)] and not rejects
