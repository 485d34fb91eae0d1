"""Load a user's object by import path, ``"package.module:NAME"`` (scores, filters, generators).

Explicit on purpose: the config names each object, nothing registers itself on import."""

from __future__ import annotations

import importlib
from typing import Any


def load_object(path: str, what: str = "object") -> Any:
    """``"mypkg.scores:TOXICITY"`` -> that object; a clear error names what is wrong."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{what} {path!r}: expected 'package.module:NAME'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"{what} {path!r}: cannot import {module_name!r} ({e})") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{what} {path!r}: {module_name!r} has no {attr!r}")
        obj = getattr(obj, part)
    return obj
