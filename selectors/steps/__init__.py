"""The built-in selection steps, one file each (steps/base.py says what a step is). The order of
``BUILTIN`` is the order ``--help`` and errors list them in."""

from instruct_selectors.steps.base import SelectionStep
from instruct_selectors.steps.decontaminate import Decontaminate
from instruct_selectors.steps.dedup import Dedup
from instruct_selectors.steps.diversify import Diversify
from instruct_selectors.steps.filter import Filter
from instruct_selectors.steps.quota import Quota
from instruct_selectors.steps.ratio import Ratio
from instruct_selectors.steps.threshold import Threshold
from instruct_selectors.steps.top_k import TopK

BUILTIN: tuple[type[SelectionStep], ...] = (Decontaminate, Filter, Dedup, Threshold, TopK, Ratio, Quota, Diversify)
