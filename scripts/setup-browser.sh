#!/usr/bin/env bash
# What the browser test (tests/test_view_browser.py) needs beyond the README's set-up: Chromium and
# its driver from the OS packages, and Selenium in .venv/. Then:
#   .venv/bin/python -m pytest -m integration tests/test_view_browser.py
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if ! command -v chromedriver >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq chromium chromium-driver
fi
.venv/bin/python -m pip install -q -c constraints.txt "selenium>=4.20"
