"""Taxonomy loader: the project's seed taxonomy, the shared shapes, and errors naming file and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from generators.taxonomy import TaxonomyError, load_taxonomy

REPO = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_project_seed_taxonomy_loads():
    ds = load_taxonomy(REPO / "data" / "taxonomy.yaml")
    assert len(ds) >= 8
    assert len({d.field for d in ds}) >= 3
    astro = next(d for d in ds if d.name == "Astronomy")
    assert astro.field == "Natural sciences" and astro.subfield == "Earth and space sciences"
    assert astro.description  # {name, description} form


def test_shared_shapes_load(shared_datasets):
    tax = shared_datasets / "taxonomy"
    ncses = load_taxonomy(tax / "ncses_taxonomy_of_disciplines.json")
    assert (
        len(ncses) == 300
        and ncses[0].field.startswith("Agricultural")
        and ncses[0].name == "Agronomy and crop science"
    )
    cip = load_taxonomy(tax / "cip2020_hierarchy.json")
    assert len(cip) > 2000 and cip[0].code == "01.0000" and cip[0].subfield == "Agriculture, General"
    flat = load_taxonomy(tax / "glan_disciplines.txt")
    assert flat[0].name == "Classical Mechanics" and flat[0].field == "" and len(flat) > 100


def test_flat_yaml_list_and_duplicates(tmp_path):
    ds = load_taxonomy(_write(tmp_path, "t.yaml", "- Optics\n- optics\n- Geology\n"))
    assert [d.name for d in ds] == ["Optics", "Geology"]  # the same discipline twice is generated once


@pytest.mark.parametrize(
    "name, text, where, reason",
    [
        (
            "t.yaml",
            "fields:\n  - name: Science\n    subfields:\n      - name: Physics\n        disciplines: [Optics, '', Heat]\n",
            "fields[0].subfields[0].disciplines[1]",
            "non-empty string",
        ),
        (
            "t.yaml",
            "fields:\n  - name: Science\n    subfields:\n      - name: Physics\n        disciplines: [Optics, 3]\n",
            "fields[0].subfields[0].disciplines[1]",
            "got int",
        ),
        ("t.yaml", "fields:\n  - name: Science\n", "fields[0]", "missing 'subfields'"),
        ("t.yaml", "fields:\n  - name: Science\n    subfields: []\n", "fields[0].subfields", "empty"),
        (
            "t.yaml",
            "fields: [{name: A, subfields: [{name: B, disciplines: [{title2: x}]}]}]\n",
            "fields[0].subfields[0].disciplines[0]",
            "unknown keys",
        ),
        ("t.yaml", "fieldz: []\n", "['fieldz']", "top-level 'fields'"),
        ("t.yaml", "fields: [\n  - oops", "line", "invalid YAML"),
        ("t.json", '{"A": {"B": ["x",]}}', "line 1 column", "invalid JSON"),
        ("t.json", '{"A": {"B": "not a list"}}', "['A']['B']", "expected a list"),
        ("t.json", '"just a string"', "", "expected a mapping"),
        ("t.yaml", "   \n", "", "empty file"),
        ("t.csv", "a,b\n", "", "unsupported file type"),
    ],
)
def test_errors_name_file_and_field(tmp_path, name, text, where, reason):
    path = _write(tmp_path, name, text)
    with pytest.raises(TaxonomyError) as err:
        load_taxonomy(path)
    message = str(err.value)
    assert message.startswith(str(path))
    assert where in message and reason in message


def test_missing_file(tmp_path):
    with pytest.raises(TaxonomyError, match="file not found"):
        load_taxonomy(tmp_path / "nope.yaml")


def test_cip_errors_name_the_code(tmp_path):
    data = {
        "01": {"title": "AG", "subfields": {"01.00": {"title": "Ag", "disciplines": [{"code": "01.0000"}]}}}
    }
    with pytest.raises(
        TaxonomyError, match=r"\['01'\]\.subfields\['01\.00'\]\.disciplines\[0\]: missing 'name'"
    ):
        load_taxonomy(_write(tmp_path, "cip.json", json.dumps(data)))
