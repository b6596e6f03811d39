"""The seed's own Python code runs against the local server, changed only where it must be.

The original quick start (tests/seed/GitHubModel_QuickStart.nl.md, a copy of the page this
collection started from) has three Python samples: basic, multi-turn and streaming. Each is
taken from the page as it is, its endpoint string is swapped for the local server's, a
placeholder GITHUB_TOKEN is put in the environment, and the code runs in a fresh interpreter.
The model name stays "Phi-3-small-8k-instruct": the server must accept it.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from seed_page import code_blocks

OLD_ENDPOINT = '"https://models.inference.ai.azure.com"'
SEED_MODEL = '"Phi-3-small-8k-instruct"'


def python_blocks() -> dict[str, str]:
    """The page's Python samples, by kind. Its code fences carry no language tag."""
    python = code_blocks("from azure.ai.inference import ChatCompletionsClient")
    kinds = {}
    for code in python:
        if "stream=True" in code:
            kinds["streaming"] = code
        elif "AssistantMessage(" in code:
            kinds["multi_turn"] = code
        else:
            kinds["basic"] = code
    return kinds


def test_the_seed_has_three_python_samples():
    blocks = python_blocks()
    assert sorted(blocks) == ["basic", "multi_turn", "streaming"]
    for code in blocks.values():
        assert code.count(OLD_ENDPOINT) == 1
        assert f"model_name = {SEED_MODEL}" in code
        assert 'os.environ["GITHUB_TOKEN"]' in code
    assert "temperature=1." in blocks["basic"] and "max_tokens=1000" in blocks["basic"]
    assert "update.choices[0].delta.content" in blocks["streaming"]
    assert "client.close()" in blocks["streaming"]


def run_seed(code: str, endpoint: str) -> subprocess.CompletedProcess:
    local = code.replace(OLD_ENDPOINT, repr(endpoint).replace("'", '"'))
    assert local != code and local.replace(f'"{endpoint}"', OLD_ENDPOINT) == code  # only that
    env = {**os.environ, "GITHUB_TOKEN": "placeholder-not-a-real-token"}
    return subprocess.run(
        [sys.executable, "-c", local],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,  # the client itself gives up after 300 s without a byte
    )


@pytest.mark.parametrize("kind", ["basic", "multi_turn", "streaming"])
def test_seed_sample_runs_against_the_local_server(kind, endpoint):
    done = run_seed(python_blocks()[kind], endpoint)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert done.stdout.strip(), "the sample printed no answer"
