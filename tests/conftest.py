"""Shared pytest fixtures. Keep each fixture small; add yours below with a one-line docstring."""

from __future__ import annotations

from pathlib import Path

import pytest

# Third-party data lives beside the repo (../shared/datasets), never inside it.
SHARED_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """The ../shared/datasets folder; skips the test (not a failure) when it is absent."""
    if not SHARED_DATASETS.is_dir():
        pytest.skip(f"{SHARED_DATASETS} not present (real third-party data for tests)")
    return SHARED_DATASETS
