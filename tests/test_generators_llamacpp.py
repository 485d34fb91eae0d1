"""The optional llamacpp backend: a clear install hint when the extra is missing."""

from __future__ import annotations

import importlib.util

import pytest

from pipelines.llm.base import MissingExtra


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is not None, reason="llama-cpp-python is installed")
def test_missing_extra_names_the_pip_command():
    from pipelines.llm import make_backend

    with pytest.raises(MissingExtra, match=r"pip install '\.\[llamacpp\]'"):
        make_backend("llamacpp", model="embedded")
