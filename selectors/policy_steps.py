"""Selection steps from config: ``{"top_k": {...}}`` dicts become the step models of
:mod:`instruct_selectors.steps` (one file per step), checked once and in a valid order.

    from instruct_selectors.policy_steps import parse_steps, label
    steps = parse_steps([{"dedup": {}}, {"top_k": {"column": "score_color", "fraction": 0.1}}])
    [label(s) for s in steps]   # ["dedup", "top_k(score_color, fraction=0.1)"]

What a step does to the rows is its own ``apply`` (steps/<name>.py); the engine that runs them is
instruct_selectors.stream_select.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from instruct_selectors import steps as builtin_steps
from instruct_selectors.steps.base import PHASES, SelectionStep
from instruct_selectors.steps.decontaminate import Decontaminate
from instruct_selectors.steps.dedup import Dedup
from instruct_selectors.steps.diversify import Diversify
from instruct_selectors.steps.filter import Filter
from instruct_selectors.steps.quota import Quota
from instruct_selectors.steps.ratio import Ratio
from instruct_selectors.steps.threshold import Threshold
from instruct_selectors.steps.top_k import TopK
from pydantic import ValidationError

__all__ = ["step_types", "SelectionStep", "parse_steps", "label", "Decontaminate", "Dedup", "Diversify",
           "Filter", "Quota", "Ratio", "Threshold", "TopK"]


def step_types() -> dict[str, type[SelectionStep]]:
    """Step name -> its class, from ``steps.BUILTIN`` as it is now."""
    return {cls.name: cls for cls in builtin_steps.BUILTIN}


def parse_steps(specs: Sequence[SelectionStep | Mapping[str, Any]]) -> list[SelectionStep]:
    """Config dicts ``{"top_k": {...}}`` (or step objects) -> validated steps in a valid order."""
    steps: list[SelectionStep] = []
    for i, spec in enumerate(specs, 1):
        if isinstance(spec, SelectionStep):
            steps.append(spec)
            continue
        if not isinstance(spec, Mapping) or len(spec) != 1:
            raise ValueError(
                f"step {i}: write each step as a one-key mapping like {{'top_k': {{...}}}}, got {spec!r}"
            )
        ((name, options),) = spec.items()
        types = step_types()
        if name not in types:
            raise ValueError(f"step {i}: unknown step {name!r}; choose from {', '.join(types)}")
        try:
            steps.append(types[name](**dict(options or {})))
        except ValidationError as err:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'options'}: {e['msg']}" for e in err.errors()
            )
            raise ValueError(f"step {i} ({name}): {problems}") from None
    for i in range(1, len(steps)):
        a, b = steps[i - 1].phase, steps[i].phase
        if b < a:
            raise ValueError(
                f"step {i + 1} ({steps[i].name}) comes after a {PHASES[a]} step: "
                f"steps run in the order {' -> '.join(PHASES)}"
            )
    return steps


def label(step: SelectionStep) -> str:
    """Short human label of a step, used in dropped_by / keep_reason and the summary."""
    return step.label()
