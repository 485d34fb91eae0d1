"""The run view in a real browser (issue 38): a tiny-model run, ``python -m flows.view`` on it, and
headless Chromium (Selenium, with the OS's chromium-driver) clicking through Datasette's pages.

Set-up beyond the README's: ``bash scripts/setup-browser.sh`` (Chromium and its driver from the OS
packages, Selenium in .venv/); then ``.venv/bin/python -m pytest -m integration tests/test_view_browser.py``."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import polars as pl
import pytest
from conftest import run_in_process

from pipelines.shards import atomic_write_jsonl

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[1]


def _tiny_run(tmp: Path) -> Path:
    """The flow's stages on 16 rows with the tiny model, in this process; the run folder."""
    from flows.config import load_config

    rows = [{"instruction": f"Question {i}: what does the {w} cost?", "input": "",
             "output": f"The {w} costs {i % 7 + 1} dollars." + " Really." * (i % 3)}
            for i, w in enumerate(["kettle", "lantern", "anchor", "compass", "harpoon", "sextant", "rudder", "mast",
                                   "kettle", "bellows", "quiver", "ladle", "trowel", "chisel", "mallet", "awl"])]
    atomic_write_jsonl(rows, tmp / "in.jsonl")
    cfg = load_config(overrides=[
        "generate.taxonomy.enabled=false", "generate.text.enabled=false", f"generate.inputs=[{tmp / 'in.jsonl'}]",
        "model.model=tiny", "model.backend=hf", "score.scores=[ifd]", "run.shard_size=8",
        "select.steps=[{dedup: {}}, {top_k: {column: score_ifd, fraction: 0.5}}]",
        f"run.out_dir={tmp / 'runs'}", "run.name=viewed"])
    return run_in_process(cfg)[0].root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def view(tmp_path_factory):
    if not shutil.which("chromedriver"):
        pytest.skip("chromedriver not installed: run bash scripts/setup-browser.sh")
    pytest.importorskip("selenium")
    tmp = tmp_path_factory.mktemp("view")
    run_dir = _tiny_run(tmp)
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "flows.view", str(run_dir), "--port", str(port)], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}/rows"
    for _ in range(240):
        try:
            urllib.request.urlopen(f"{base}.json", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(arg)
    browser = webdriver.Chrome(options=options)
    try:
        yield browser, base, pl.read_parquet(run_dir / "selected" / "all.parquet")
    finally:
        browser.quit()
        server.terminate()
        server.wait(timeout=30)


def test_a_dropped_row_shows_why_it_was_dropped(view):
    browser, base, selected = view
    dropped = selected.filter(~pl.col("keep")).sort("id").row(0, named=True)
    browser.get(f"{base}/rows?id={dropped['id']}")
    assert dropped["dropped_by"] in browser.find_element("tag name", "body").text


def test_the_keep_facet_counts_the_rows_the_run_kept(view):
    browser, base, selected = view
    browser.get(f"{base}/rows?_facet=keep")
    facet = browser.find_element("css selector", "[data-column='keep']").text
    counts = dict(re.findall(r"^\s*(\d)\s+([\d,]+)\s*$", facet, re.M))
    assert int(counts["1"].replace(",", "")) == int(selected["keep"].sum())


def test_search_finds_a_known_instruction(view):
    browser, base, selected = view
    browser.get(f"{base}/rows?_search=sextant")
    body = browser.find_element("tag name", "body").text
    assert "Question 5: what does the sextant cost?" in body and "1 row" in body
