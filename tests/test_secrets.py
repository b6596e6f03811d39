"""Secrets never reach a notebook, a log line or git.

Scans every committed notebook (sources and any outputs), every file `git ls-files` lists, and
the logs of the servers this test session ran, for token-shaped strings (GitHub PATs, OpenAI
keys, 32-hex Azure keys next to a key-ish name) and for the actual API keys the tests used.
So that the log scan has something to find if keys did leak, it first runs a keyed server with
every logging option on and sends it right, wrong and missing keys. (Every test server's stop()
in tests/server_process.py checks its own log the same way, so logs of test files that run
after this one are checked too.)
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx
import pytest
import secret_scan
from server_process import LOG_FILES, ROOT, TEST_KEYS, start_server

MAX_BYTES = 5_000_000


def find_secrets(text: str) -> list[str]:
    return secret_scan.find_secrets(text, TEST_KEYS)


def read_text(path: Path) -> str | None:
    try:
        if path.stat().st_size > MAX_BYTES:
            return None
        data = path.read_bytes()
    except OSError:
        return None
    if b"\0" in data[:8192]:  # binary
        return None
    return data.decode("utf-8", errors="replace")


def test_the_scanner_finds_what_it_looks_for():
    """The patterns do match real-looking tokens (built here, so no file holds them)."""
    gh = "ghp_" + "a1B2" * 9
    oa = "sk-proj-" + "Xy9_" * 8
    az = "AZURE_AI_API_KEY=" + "0123456789abcdef" * 2
    for sample in (gh, f"token: github_pat_{'A1' * 20}", oa, az, TEST_KEYS["server"]):
        assert find_secrets(f"some text {sample} more"), sample
    assert not find_secrets(
        "disk-space task-runner sk-test-0123456789-very-secret sha256:" + "ab" * 32
    )
    report = find_secrets(f"line one\nkey={TEST_KEYS['server']} {oa}")
    assert report == ["OpenAI key on line 2", "the test API key 'server' on line 2"]


@pytest.fixture(scope="module")
def noisy_server_log(tmp_path_factory) -> Path:
    """A keyed server with prompt and access logging on, sent right, wrong and missing keys."""
    server = start_server(
        tmp_path_factory.mktemp("secrets") / "state",
        "--log-prompts", "--access-log",
        api_key=TEST_KEYS["server"],
    )  # fmt: skip
    try:
        ask = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
        for headers in (
            {"api-key": TEST_KEYS["server"]},
            {"Authorization": f"Bearer {TEST_KEYS['server']}", "api-key": TEST_KEYS["server"]},
            {"api-key": TEST_KEYS["wrong"]},
            {"Authorization": f"Bearer {TEST_KEYS['wrong']}"},
            {},
        ):
            httpx.post(server.url + "/chat/completions", json=ask, headers=headers, timeout=120)
            httpx.get(server.url + "/info", headers=headers, timeout=30)
    finally:
        server.stop()
    return server.log_file


def server_logs(noisy_server_log: Path, tmp_path_factory) -> list[Path]:
    logs = {noisy_server_log, *LOG_FILES}
    state_dir = os.environ.get("PHI_STATE_DIR")
    if state_dir:  # the session's shared server (conftest.py)
        logs.update(Path(state_dir).glob("*.log"))
    logs.update(tmp_path_factory.getbasetemp().glob("**/server.log"))
    return sorted(p for p in logs if p.exists())


def test_no_secret_in_server_logs(noisy_server_log, tmp_path_factory):
    logs = server_logs(noisy_server_log, tmp_path_factory)
    assert noisy_server_log in logs
    leaks = {}
    for log in logs:
        text = read_text(log) or ""
        if found := find_secrets(text):
            leaks[str(log)] = found
    print(f"\nscanned {len(logs)} server logs")
    assert not leaks, leaks
    assert "GET /info" in noisy_server_log.read_text()  # it did log the requests


def test_no_secret_in_committed_notebooks():
    notebooks = sorted(ROOT.glob("notebooks/**/*.ipynb"))
    notebooks = [p for p in notebooks if ".ipynb_checkpoints" not in p.parts]
    leaks = {str(p): f for p in notebooks if (f := find_secrets(read_text(p) or ""))}
    print(f"\nscanned {len(notebooks)} notebooks")
    assert not leaks, leaks


def test_no_secret_in_git():
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    files = [ROOT / f for f in listed.split("\0") if f]
    assert files, "git ls-files listed nothing"
    leaks = {}
    for path in files:
        text = read_text(path)
        if text and (found := find_secrets(text)):
            leaks[str(path.relative_to(ROOT))] = found
    print(f"\nscanned {len(files)} files in git")
    assert not leaks, leaks
