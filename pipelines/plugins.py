"""Load a user's object by import path, ``"package.module:NAME"`` (scores, filters, generators).

Explicit on purpose: the config names each object, nothing registers itself on import."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
from pathlib import Path
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


def _source_files(module_name: str) -> list[tuple[str, Path]]:
    """(name, file) of the module's source and of every module of its top-level package, names
    relative to the package (so a moved checkout keys the same).

    A package installed into site-packages is a library, not code being developed: only the
    module's own file counts there (hashing all of, say, numpy on every run would cost seconds)."""
    spec = importlib.util.find_spec(module_name)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return []
    own = Path(spec.origin)
    top = importlib.util.find_spec(module_name.split(".")[0])
    roots = [Path(p) for p in (top.submodule_search_locations or [])] if top else []
    if not roots or {"site-packages", "dist-packages"} & set(own.parts):
        return [(own.name, own)]
    return sorted({(f.relative_to(root).as_posix(), f) for root in roots for f in root.rglob("*.py")})


def plugin_code(paths: list[str]) -> dict[str, str]:
    """``{module: sha256 of its source and its package's}`` for import paths ``"pkg.mod:NAME"``.

    What a stage that runs a user's object is keyed on besides its config: an edited plugin (its
    module, or any module of its package) reruns the stage. Modules without Python source (built-in,
    compiled) are keyed by name alone."""
    out: dict[str, str] = {}
    for path in paths:
        module_name = path.partition(":")[0]
        if module_name in out:
            continue
        h = hashlib.sha256()
        for name, file in _source_files(module_name):
            h.update(name.encode() + b"\0" + file.read_bytes() + b"\0")
        out[module_name] = h.hexdigest()[:16]
    return out
