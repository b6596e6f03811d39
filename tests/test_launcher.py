"""phihelpers.launcher: the one place a `serve` process starts, waits and stops.

Each test uses a state directory of its own and port 0, so it never meets the session's server.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from phihelpers import state as state_files
from phihelpers.config import load_settings
from phihelpers.launcher import LocalServerError, launch, probe, spawn, wait_until_ready
from phihelpers.local import ensure_local_server, running_server, stop_local_server
from phihelpers.server.settings import ServeSettings

KEY = "launcher-test-key-" + "x" * 24


def test_launch_waits_until_it_answers_and_stop_ends_it_cleanly(tmp_path):
    handle = launch(ServeSettings.build(port=0, state_dir=tmp_path, max_queue=3))
    try:
        assert handle.running and handle.state["pid"] == handle.proc.pid
        assert httpx.get(handle.endpoint + "/health").json()["server"] == "phihelpers"
        assert "--max-queue" in handle.command
    finally:
        code = handle.stop()
    assert code == 0 and not handle.running
    assert state_files.read_state(tmp_path) is None  # the server removed its own state


def test_the_key_travels_in_the_environment_not_on_the_command_line(tmp_path):
    handle = launch(ServeSettings.build(port=0, state_dir=tmp_path, api_key=KEY))
    try:
        cmdline = Path(f"/proc/{handle.proc.pid}/cmdline").read_bytes().decode()
        assert KEY not in cmdline and KEY not in " ".join(handle.command)
        assert httpx.get(handle.endpoint + "/info").status_code == 401
        ok = httpx.get(handle.endpoint + "/info", headers={"api-key": KEY})
        assert ok.status_code == 200
    finally:
        handle.stop()


def test_a_server_that_cannot_start_is_reported_with_its_log(tmp_path):
    bad = tmp_path / "not-a-model.gguf"
    bad.write_bytes(b"this is not a GGUF file")
    proc = spawn(tmp_path, ["--port", "0", "--model", str(bad)])
    with pytest.raises(LocalServerError) as caught:
        wait_until_ready(proc, tmp_path, timeout=60)
    assert "exited during start-up (code 2)" in str(caught.value)
    assert "not a GGUF model file" in str(caught.value)  # the end of its log


def test_a_foreground_serve_leaves_the_background_servers_state_alone(tmp_path):
    settings = load_settings(env={"PHI_STATE_DIR": str(tmp_path), "PHI_LOCAL_PORT": "0"})
    background = ensure_local_server(settings)
    try:
        foreground = spawn(tmp_path, ["--port", "0"])
        log = state_files.log_file(tmp_path)
        deadline = time.monotonic() + 60
        while "serves without it" not in log.read_text() and time.monotonic() < deadline:
            assert foreground.poll() is None, log.read_text()
            time.sleep(0.1)
        assert "serves without it" in log.read_text()
        assert state_files.read_state(tmp_path)["pid"] == background["pid"]
        foreground.terminate()
        assert foreground.wait(15) == 0
        # The background server still owns the state, and is found again (no second server).
        assert state_files.read_state(tmp_path)["pid"] == background["pid"]
        assert running_server(settings)["pid"] == background["pid"]
        assert ensure_local_server(settings)["pid"] == background["pid"]
    finally:
        stop_local_server(settings)


# -- a private state directory, and a /health that proves the server holds the secret ------


def file_mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_launched_server_keeps_its_state_private(tmp_path):
    state_dir = tmp_path / "new" / "state"  # created by the launcher
    handle = launch(ServeSettings.build(port=0, state_dir=state_dir))
    try:
        assert file_mode(state_dir) == 0o700
        assert file_mode(state_files.state_file(state_dir)) == 0o600
        assert file_mode(state_files.log_file(state_dir)) == 0o600
    finally:
        handle.stop()


def test_health_answers_a_challenge_with_an_hmac_and_never_the_secret(tmp_path):
    handle = launch(ServeSettings.build(port=0, state_dir=tmp_path))
    try:
        secret = json.loads(state_files.state_file(tmp_path).read_text())["secret"]
        assert len(secret) >= 32
        nonce = "fresh-nonce-" + "z" * 20
        r = httpx.get(handle.endpoint + "/health", headers={"X-Phihelpers-Challenge": nonce})
        expected = hmac.new(secret.encode(), nonce.encode(), hashlib.sha256).hexdigest()
        assert r.json()["proof"] == expected and secret not in r.text
        plain = httpx.get(handle.endpoint + "/health")
        assert "proof" not in plain.json() and secret not in plain.text
        assert probe(handle.state) is not None
        assert probe({**handle.state, "secret": "a-planted-secret-" + "0" * 20}) is None
        assert probe({k: v for k, v in handle.state.items() if k != "secret"}) is None
        log = state_files.log_file(tmp_path).read_text()
    finally:
        handle.stop()
    assert secret not in log


def test_a_serve_in_a_state_directory_others_can_write_refuses_in_one_sentence(tmp_path):
    tmp_path.chmod(0o777)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "phihelpers", "serve", "--port", "0", "--state-dir", tmp_path],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        tmp_path.chmod(0o700)
    assert done.returncode == 2
    error = done.stderr.strip()
    assert error.startswith("error: The state directory") and "0777" in error
    assert "\n" not in error and "Traceback" not in error
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no state, no log
    tmp_path.chmod(0o777)
    try:
        with pytest.raises(LocalServerError, match="can be written by other users"):
            spawn(tmp_path, ["--port", "0"]).kill()  # (were it started: stopped at once)
    finally:
        tmp_path.chmod(0o700)
