"""Defaults the server applies when a request leaves something out."""

from __future__ import annotations

import subprocess
import sys

import httpx

from phihelpers.extra_server import start_extra_server

STORY = [{"role": "user", "content": "Write a very long story about a dragon, in many chapters."}]


def test_a_request_without_max_tokens_is_capped_by_the_server_default():
    with start_extra_server(default_max_tokens=5) as server:
        url = server.endpoint + "/chat/completions"
        capped = httpx.post(url, json={"messages": STORY, "temperature": 0}, timeout=120).json()
        assert 1 <= capped["usage"]["completion_tokens"] <= 5
        # An explicit max_tokens is the caller's choice, above the default too.
        asked = httpx.post(
            url, json={"messages": STORY, "temperature": 0, "max_tokens": 9}, timeout=120
        ).json()
        assert asked["usage"]["completion_tokens"] <= 9
        streamed = httpx.post(url, json={"messages": STORY, "stream": True}, timeout=120)
        usage_lines = [line for line in streamed.text.splitlines() if '"usage"' in line]
        assert streamed.status_code == 200 and usage_lines
        assert '"completion_tokens":' in usage_lines[-1]
        completion = int(usage_lines[-1].split('"completion_tokens":')[1].split(",")[0])
        assert 1 <= completion <= 5


def test_a_default_max_tokens_below_one_is_refused():
    result = subprocess.run(
        [sys.executable, "-m", "phihelpers", "serve", "--port", "0", "--default-max-tokens", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--default-max-tokens must be at least 1" in result.stderr
    assert "Traceback" not in result.stderr
