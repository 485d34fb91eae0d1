"""Nothing private leaves the machine through what a run writes or shares (issue 23): credentials
of an endpoint URL, the user's paths, the Hub token. Unit checks of pipelines/redact.py, then one
run of the flow on the tiny model and a push to a fake Hub, grepped for every secret."""

from __future__ import annotations

import pytest

from pipelines.redact import redact_config, redact_text, redact_url


@pytest.mark.parametrize("url, shown", [
    ("http://user:secret@host/v1?key=sk-XYZ", "http://host/v1"),
    ("https://api.example.com:8443/v1", "https://api.example.com:8443/v1"),
    ("http://[::1]:8000/v1?token=t#frag", "http://[::1]:8000/v1"),
    ("http://u:p@h:notaport/v1?k=sk", "h:notaport/v1"),
    ("u:p@host/v1?k=sk", "host/v1"),
])
def test_redact_url_drops_userinfo_and_query(url, shown):
    assert redact_url(url) == shown


def test_redact_text_and_config_find_urls_anywhere():
    msg = "HTTP 500 from http://user:secret@host/v1/completions?key=sk-XYZ: see (http://a:b@c/d)."
    assert redact_text(msg) == "HTTP 500 from http://host/v1/completions: see (http://c/d)."
    config = {"model": {"base_url": "http://u:s3cr3t@h/v1?key=sk-1", "api_key": "sk-2", "token_budget": 4096},
              "score": {"judge": {"base_url": None}}, "notes": ["via http://x:y@z/w?q=1"], "hf_token": ""}
    assert redact_config(config) == {
        "model": {"base_url": "http://h/v1", "api_key": "<redacted>", "token_budget": 4096},
        "score": {"judge": {"base_url": None}}, "notes": ["via http://z/w"], "hf_token": ""}


# --- one run of the flow on the tiny model, then a push: nothing private in what is shared -------

import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import polars as pl  # noqa: E402
from test_export import TOKEN, FakeHub  # noqa: E402

from flows.run_folder import LOCAL_FILES  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MARKER = "MARKER_u53r"  # in the path of the folder the user works in
URL_SECRETS = ("s3cr3t-pw", "sk-XYZ", "user:")  # in the endpoint URLs the config records
SECRET_URL = "http://user:s3cr3t-pw@127.0.0.1:9/v1?key=sk-XYZ"  # port 9: nothing listens, nothing calls it


def _text(path: Path) -> str:
    """What a file says: rows of Parquet shards decoded (their pages may be compressed), else its bytes."""
    if path.suffix == ".parquet":
        return pl.read_parquet(path).write_ndjson()
    return path.read_bytes().decode("latin-1")


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """Run the flow from <tmp>/MARKER_u53r/ with secret endpoint URLs in its config and HF_TOKEN set;
    push the dataset to a fake Hub. Returns (texts of every shared file by name, absolute input path)."""
    home = tmp_path_factory.mktemp("privacy")
    work = home / MARKER
    (work / "runs").mkdir(parents=True)
    rows = [{"instruction": f"Question {i}: what does item {i} cost?", "input": "",
             "output": f"It costs {i % 7 + 1} dollars."} for i in range(12)]
    (work / "input.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    elsewhere = home / f"elsewhere-{MARKER}"  # a folder outside the working directory
    elsewhere.mkdir()
    target = [{"instruction": f"What does thing {i} cost?", "response": f"It costs {i} euros."} for i in range(6)]
    (elsewhere / "target.jsonl").write_text("".join(json.dumps(r) + "\n" for r in target))
    (elsewhere / "eval.jsonl").write_text(json.dumps({"instruction": "An unrelated eval question?",
                                                      "response": "An unrelated answer."}) + "\n")
    env = {**os.environ, "PREFECT_HOME": str(home / "prefect-home"), "HF_HUB_OFFLINE": "1", "HF_TOKEN": TOKEN,
           "HF_HOME": str(home / "hf-home"), "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    # Every path option absolute, as many users type them (issue 37): inside the working directory
    # (input, out_dir, taxonomy) and outside it (target, eval set, passages).
    args = ["--no-taxonomy", "--no-text", "--model", "tiny", "--backend", "hf", "--input", str(work / "input.jsonl"),
            "--out-dir", str(work / "runs"), "--run-name", "shared", "--scores", "ifd,color", "--set", "run.shard_size=6",
            "--set", f"score.target={elsewhere / 'target.jsonl'}", "--set", "score.target_holdout=0",
            "--set", f"select.decontaminate.against=[{elsewhere / 'eval.jsonl'}]",
            "--set", f"generate.taxonomy.path={work / 'taxonomy.yaml'}",
            "--set", f"generate.text.path={elsewhere / 'passages.jsonl'}",
            "--set", "select.steps=[{top_k: {column: score_ifd, fraction: 0.5}}]",
            "--set", f"model.base_url={SECRET_URL}", "--set", f"score.models.judge.base_url={SECRET_URL}/judge"]
    res = subprocess.run([sys.executable, "-m", "flows.build_dataset", *args], cwd=work, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    run_dir = work / "runs" / "shared"
    texts = {str(p.relative_to(run_dir)): _text(p) for p in sorted(run_dir.rglob("*"))
             if p.is_file() and p.name not in LOCAL_FILES}

    from pipelines.export import push_to_hub

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_TOKEN", TOKEN)
        mp.setenv("HF_HOME", str(home / "hf-home"))
        _no_network(mp)  # as test_export's no_network fixture: a call past the fake Hub fails
        hub = FakeHub()
        hub.install(mp, home)
        push_to_hub(run_dir / "dataset", "someone/private-test")
    assert "README.md" in hub.files and any(k.endswith(".parquet") for k in hub.files)
    for name, data in {**hub.uploaded, **hub.files}.items():
        tmp = home / "pushed" / name
        tmp.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        texts[f"hub:{name}"] = _text(tmp)
    texts["console"] = res.stdout + res.stderr
    return texts, str((work / "input.jsonl").resolve())


def _no_network(mp) -> None:
    import socket

    def refuse(*args, **kwargs):
        raise OSError("network disabled in tests")

    mp.setattr(socket.socket, "connect", refuse)
    mp.setattr(socket, "create_connection", refuse)


@pytest.mark.slow
def test_no_secret_and_no_user_path_in_the_run_folder_or_on_the_hub(shared):
    texts, input_path = shared
    assert "config.json" in texts and not any(n.startswith(".prefect-results/") for n in texts)
    for name, text in texts.items():
        if name == "console":
            continue  # the terminal may name the user's folders; it is not shared
        assert TOKEN not in text, name
        for secret in URL_SECRETS:
            assert secret not in text, (name, secret)
        # The user's path (the folder holding the marker): nowhere, the rows' `source` included.
        assert MARKER not in text, (name, text[max(0, text.find(MARKER) - 300):text.find(MARKER) + 100])
    assert TOKEN not in texts["console"]
    assert "http://127.0.0.1:9/v1" in texts["config.json"]  # the endpoint is still there, without secrets
    config = json.loads(texts["config.json"])
    assert config["generate"]["inputs"] == ["input.jsonl"] and config["run"]["out_dir"] == "runs"
    assert config["score"]["target"] == "target.jsonl"  # outside the working directory: the name alone
    card = texts["dataset/README.md"]
    assert "hf:conditional/cond-" in card and "hf:conditional/cond-" in texts["report.md"]  # the backend key
    assert '["input.jsonl"]' in card


@pytest.mark.slow
def test_the_rows_do_not_name_the_users_input_path(shared):
    texts, _ = shared
    leaking = sorted(name for name, text in texts.items() if name != "console" and MARKER in text)
    assert not leaking, f"{MARKER} found in {leaking}"
