"""The built-in scores (one file each beside this one) and the lookup of a user's own.

Adding a score to the package: a file declaring a :class:`~instruct_selectors.scores.base.Score`
and one entry in ``BUILTIN``. A user's score needs no edit here: ``score.custom`` names it by
import path (``"mypkg.scores:TOXICITY"``) and ``score.scores`` then lists its name."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from instruct_selectors.scores.base import Score
from instruct_selectors.scores.color import COLOR
from instruct_selectors.scores.ctx_attn import CTX_ATTN
from instruct_selectors.scores.ctx_loss import CTX_LOSS
from instruct_selectors.scores.embedding import EMBEDDING
from instruct_selectors.scores.ifd import IFD
from instruct_selectors.scores.judge import JUDGE
from instruct_selectors.scores.otd import OTD
from instruct_selectors.scores.target_sim import TARGET_SIM

from pipelines.plugins import load_object

BUILTIN: tuple[Score, ...] = (COLOR, IFD, CTX_LOSS, CTX_ATTN, TARGET_SIM, EMBEDDING, JUDGE, OTD)
BUILTIN_NAMES = tuple(s.name for s in BUILTIN)


def load_custom(paths: Iterable[str]) -> list[Score]:
    """The user's scores named by import path; each must look like a Score."""
    out = []
    for path in paths:
        obj = load_object(path, what="score")
        missing = [a for a in ("name", "column", "compute") if not hasattr(obj, a)]
        if missing:
            raise ValueError(f"score.custom {path!r} is not a Score (missing {', '.join(missing)}): "
                             "declare it with instruct_selectors.scores.base.Score")
        if obj.name in BUILTIN_NAMES:
            raise ValueError(f"score.custom {path!r}: the name {obj.name!r} is a built-in score's")
        out.append(obj)
    return out


def available(custom: Iterable[str] = ()) -> dict[str, Score]:
    """Every score this config may ask for, by name: the built-ins, then the user's."""
    return {s.name: s for s in (*BUILTIN, *load_custom(custom))}


def resolve(names: Sequence[str], custom: Iterable[str] = ()) -> list[Score]:
    """The Score of each name, in order; an unknown name is an error listing the choices."""
    known = available(custom)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown score(s) {unknown}: choose from {tuple(known)}")
    return [known[n] for n in dict.fromkeys(names)]


def column_owner(custom: Iterable[str] = ()) -> dict[str, Score]:
    """score column -> the Score that writes it (selection steps and control tokens read columns)."""
    return {s.column: s for s in available(custom).values()}
