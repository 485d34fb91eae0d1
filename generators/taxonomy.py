"""Load a taxonomy of human knowledge (fields -> sub-fields -> disciplines) and validate it.

    from generators.taxonomy import load_taxonomy
    disciplines = load_taxonomy("data/taxonomy.yaml")      # list[Discipline]
    python -m generators.taxonomy data/taxonomy.yaml        # prints the disciplines, or the error

Accepted shapes (YAML or JSON; the shape is recognised from the content):

* this project's own (``data/taxonomy.yaml``)::

      fields:
        - name: Natural sciences
          subfields:
            - name: Physics
              disciplines: [Classical mechanics, Optics]      # or {name: ..., description: ...}

* NCSES "Taxonomy of Disciplines": ``{broad field: {field: [detailed field, ...]}}``;
* CIP 2020 hierarchy: ``{"01": {"title", "subfields": {"01.00": {"title", "disciplines": [{"code", "title"}]}}}}``;
* a flat list of discipline names: a ``.txt`` file (one a line) or a YAML/JSON list of strings.

Every problem raises :class:`TaxonomyError` naming the file and the path of the bad field, e.g.
``data/taxonomy.yaml: fields[1].subfields[0].disciplines[2]: expected a non-empty string, got int``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml


class TaxonomyError(ValueError):
    """The taxonomy file cannot be used; the message names the file and the field."""

    def __init__(self, file: Path | str, where: str, reason: str):
        self.file, self.where, self.reason = str(file), where, reason
        super().__init__(f"{file}: {where + ': ' if where else ''}{reason}")


@dataclass(frozen=True)
class Discipline:
    field: str
    subfield: str
    name: str
    description: str = ""
    code: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def _text(file: Path, where: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        got = repr(value) if isinstance(value, str) else type(value).__name__
        raise TaxonomyError(file, where, f"expected a non-empty string, got {got}")
    return " ".join(value.split())


def _need(file: Path, where: str, value: Any, kind: type, what: str) -> Any:
    if not isinstance(value, kind):
        raise TaxonomyError(file, where, f"expected {what}, got {type(value).__name__}")
    if not value:
        raise TaxonomyError(file, where, f"expected {what}, got an empty one")
    return value


def _discipline(file: Path, where: str, value: Any, field: str, subfield: str) -> Discipline:
    if isinstance(value, Mapping):
        unknown = set(value) - {"name", "title", "description", "code"}
        if unknown:
            raise TaxonomyError(
                file, where, f"unknown keys {sorted(unknown)} (allowed: name, description, code)"
            )
        name_key = "name" if "name" in value else "title"
        if name_key not in value:
            raise TaxonomyError(file, where, "missing 'name'")
        desc = value.get("description", "")
        if not isinstance(desc, str):
            raise TaxonomyError(file, f"{where}.description", f"expected a string, got {type(desc).__name__}")
        code = str(value.get("code", ""))
        return Discipline(
            field, subfield, _text(file, f"{where}.{name_key}", value[name_key]), desc.strip(), code
        )
    return Discipline(field, subfield, _text(file, where, value))


def _own(file: Path, data: Mapping) -> list[Discipline]:
    unknown = set(data) - {"fields", "name", "description", "version"}
    if unknown:
        raise TaxonomyError(file, "", f"unknown top-level keys {sorted(unknown)} (expected 'fields')")
    out = []
    for i, fd in enumerate(_need(file, "fields", data["fields"], list, "a list of fields")):
        w = f"fields[{i}]"
        _need(file, w, fd, Mapping, "a mapping with 'name' and 'subfields'")
        for key in ("name", "subfields"):
            if key not in fd:
                raise TaxonomyError(file, w, f"missing {key!r}")
        field = _text(file, f"{w}.name", fd["name"])
        for j, sf in enumerate(_need(file, f"{w}.subfields", fd["subfields"], list, "a list of subfields")):
            ws = f"{w}.subfields[{j}]"
            _need(file, ws, sf, Mapping, "a mapping with 'name' and 'disciplines'")
            for key in ("name", "disciplines"):
                if key not in sf:
                    raise TaxonomyError(file, ws, f"missing {key!r}")
            sub = _text(file, f"{ws}.name", sf["name"])
            ds = _need(file, f"{ws}.disciplines", sf["disciplines"], list, "a list of disciplines")
            out.extend(_discipline(file, f"{ws}.disciplines[{k}]", d, field, sub) for k, d in enumerate(ds))
    return out


def _is_cip(data: Mapping) -> bool:
    first = next(iter(data.values()))
    return isinstance(first, Mapping) and "subfields" in first and "title" in first


def _cip(file: Path, data: Mapping) -> list[Discipline]:
    out = []
    for code, series in data.items():
        w = f"[{code!r}]"
        _need(file, w, series, Mapping, "a mapping with 'title' and 'subfields'")
        field = _text(file, f"{w}.title", series.get("title"))
        for sub_code, sf in _need(
            file, f"{w}.subfields", series.get("subfields"), Mapping, "a mapping"
        ).items():
            ws = f"{w}.subfields[{sub_code!r}]"
            _need(file, ws, sf, Mapping, "a mapping with 'title' and 'disciplines'")
            sub = _text(file, f"{ws}.title", sf.get("title"))
            ds = _need(file, f"{ws}.disciplines", sf.get("disciplines"), list, "a list of disciplines")
            out.extend(_discipline(file, f"{ws}.disciplines[{k}]", d, field, sub) for k, d in enumerate(ds))
    return out


def _nested(file: Path, data: Mapping) -> list[Discipline]:
    """NCSES-like: {field: {subfield: [discipline, ...]}}."""
    out = []
    for field_name, subs in data.items():
        w = f"[{field_name!r}]"
        field = _text(file, w, field_name)
        for sub_name, ds in _need(
            file,
            w,
            subs,
            Mapping,
            "a mapping of subfield -> list of disciplines (or a top-level 'fields' list)",
        ).items():
            ws = f"{w}[{sub_name!r}]"
            sub = _text(file, ws, sub_name)
            ds = _need(file, ws, ds, list, "a list of disciplines")
            out.extend(_discipline(file, f"{ws}[{k}]", d, field, sub) for k, d in enumerate(ds))
    return out


def parse_taxonomy(data: Any, file: Path | str = "<taxonomy>") -> list[Discipline]:
    """Already-loaded YAML/JSON data -> disciplines (shape recognised from the content)."""
    file = Path(file)
    if isinstance(data, list):
        _need(file, "", data, list, "a list of disciplines")
        out = [_discipline(file, f"[{i}]", d, "", "") for i, d in enumerate(data)]
    elif isinstance(data, Mapping):
        if not data:
            raise TaxonomyError(file, "", "empty taxonomy")
        if "fields" in data:
            out = _own(file, data)
        elif _is_cip(data):
            out = _cip(file, data)
        else:
            out = _nested(file, data)
    else:
        raise TaxonomyError(
            file,
            "",
            f"expected a mapping (fields -> subfields -> disciplines) or a list, got {type(data).__name__}",
        )
    if not out:
        raise TaxonomyError(file, "", "no disciplines found")
    # The same discipline listed twice would be generated twice: keep the first.
    seen, unique = set(), []
    for d in out:
        key = (d.field.casefold(), d.subfield.casefold(), d.name.casefold())
        if key not in seen:
            seen.add(key)
            unique.append(d)
    return unique


def load_taxonomy(path: Path | str) -> list[Discipline]:
    """Read and validate a taxonomy file (``.yaml``/``.yml``/``.json``/``.txt``)."""
    path = Path(path)
    if not path.is_file():
        raise TaxonomyError(path, "", "file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise TaxonomyError(path, "", f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    if not text.strip():
        raise TaxonomyError(path, "", "empty file")
    suffix = path.suffix.lower()
    if suffix == ".txt":
        names = [
            " ".join(line.split()) for line in text.splitlines() if line.strip() and not line.startswith("#")
        ]
        return parse_taxonomy(names, path)
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise TaxonomyError(path, f"line {e.lineno} column {e.colno}", f"invalid JSON: {e.msg}") from None
    elif suffix in (".yaml", ".yml"):
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f"line {mark.line + 1} column {mark.column + 1}" if mark else ""
            raise TaxonomyError(path, where, f"invalid YAML: {getattr(e, 'problem', None) or e}") from None
    else:
        raise TaxonomyError(path, "", f"unsupported file type {suffix!r} (use .yaml, .yml, .json or .txt)")
    return parse_taxonomy(data, path)


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description="Validate a taxonomy file and list its disciplines.")
    ap.add_argument("path", help="taxonomy file (.yaml, .json or .txt)")
    args = ap.parse_args(argv)
    try:
        ds = load_taxonomy(args.path)
    except TaxonomyError as e:
        sys.exit(f"error: {e}")
    for d in ds:
        print(" / ".join(p for p in (d.field, d.subfield, d.name) if p))
    print(f"{len(ds)} disciplines")


if __name__ == "__main__":
    main()
