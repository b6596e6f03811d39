"""phihelpers.local: find or start the background server, stale state, stop without zombies.

Every test here uses its own state directory and port 0, so it never touches the session's
server (or a learner's); every server a test starts is stopped in teardown.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from phihelpers import state as state_files
from phihelpers.config import load_settings
from phihelpers.local import (
    LocalServerError,
    ensure_local_server,
    running_server,
    stop_local_server,
    url_of,
)


def state_path(settings):
    return state_files.state_file(settings.state_dir)


def read_state(settings):
    return state_files.read_state(settings.state_dir)


def make_settings(state_dir: Path, **extra: str):
    return load_settings(env={"PHI_STATE_DIR": str(state_dir), "PHI_LOCAL_PORT": "0", **extra})


@pytest.fixture
def own(tmp_path):
    """Settings for a private server; whatever it starts is stopped afterwards."""
    settings = make_settings(tmp_path / "state")
    yield settings
    stop_local_server(settings)


def process_state(pid: int) -> str | None:
    """The state letter from /proc/<pid>/stat (R, S, Z...), or None if the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def wait_until_gone(pid: int, timeout: float = 10.0) -> str | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process_state(pid) is not None:
        time.sleep(0.05)
    return process_state(pid)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_start_writes_state_reuses_and_stops_without_a_zombie(own):
    state = ensure_local_server(own)
    on_disk = json.loads(state_path(own).read_text())
    assert on_disk["pid"] == state["pid"] and on_disk["port"] == state["port"] > 0
    assert on_disk["host"] == "127.0.0.1"
    assert state["model"]  # which model it serves
    health = httpx.get(url_of(state) + "/health", timeout=10).json()
    assert health["server"] == "phihelpers" and health["pid"] == state["pid"]

    again = ensure_local_server(own)
    assert again["pid"] == state["pid"] and again["port"] == state["port"]
    assert running_server(own)["pid"] == state["pid"]

    assert stop_local_server(own) is True
    assert not state_path(own).exists()
    assert wait_until_gone(state["pid"]) is None  # gone, not lingering as a zombie (Z)
    assert running_server(own) is None
    assert stop_local_server(own) is False  # nothing left to stop


def test_stale_state_file_with_a_dead_pid_is_replaced(own):
    pid = dead_pid()
    own.state_dir.mkdir(parents=True)
    state_path(own).write_text(json.dumps({"pid": pid, "host": "127.0.0.1", "port": 9}))
    assert running_server(own) is None
    assert not state_path(own).exists()  # the stale file is removed

    state_path(own).write_text(json.dumps({"pid": pid, "host": "127.0.0.1", "port": 9}))
    state = ensure_local_server(own)
    assert state["pid"] != pid
    assert read_state(own)["pid"] == state["pid"]


@pytest.mark.parametrize(
    "content", ["", "{not json", '{"pid": 1}', "[1, 2]", '{"pid": "12", "host": "x", "port": 1}']
)
def test_unreadable_state_file_means_no_server(own, content):
    own.state_dir.mkdir(parents=True)
    state_path(own).write_text(content)
    assert read_state(own) is None
    assert running_server(own) is None


def test_live_pid_that_is_not_our_server_is_not_trusted(own, endpoint):
    """The pid lives (reused by another program) and the port answers as another phihelpers
    server: neither is this state file's server, so it is neither used nor signalled."""
    stranger = subprocess.Popen(["sleep", "120"])
    try:
        port = int(endpoint.rsplit(":", 1)[1])  # the session server: a phihelpers, other pid
        fake = {"pid": stranger.pid, "host": "127.0.0.1", "port": port}
        own.state_dir.mkdir(parents=True)
        state_path(own).write_text(json.dumps(fake))
        assert running_server(own) is None

        state_path(own).write_text(json.dumps(fake))
        assert stop_local_server(own) is False
        assert stranger.poll() is None  # not signalled
        assert not state_path(own).exists()

        state_path(own).write_text(json.dumps(fake))
        state = ensure_local_server(own)
        assert state["pid"] not in (stranger.pid,) and state["port"] != port
    finally:
        stranger.kill()
        stranger.wait()


def test_two_callers_at_once_share_one_server(own):
    with ThreadPoolExecutor(2) as pool:
        states = list(pool.map(lambda _: ensure_local_server(own), range(2)))
    assert states[0]["pid"] == states[1]["pid"]


def test_busy_default_port_falls_back_to_a_free_one(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        settings = replace(
            make_settings(tmp_path / "state"), local_port=port, local_port_explicit=False
        )
        try:
            state = ensure_local_server(settings)
            assert state["port"] not in (0, port)
        finally:
            stop_local_server(settings)


def test_busy_explicit_port_is_a_clear_error(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        settings = make_settings(tmp_path / "state", PHI_LOCAL_PORT=str(port))
        with pytest.raises(LocalServerError) as err:
            ensure_local_server(settings)
    message = str(err.value)
    assert f"Port {port}" in message and "PHI_LOCAL_PORT" in message
    assert read_state(settings) is None


def test_missing_model_file_fails_with_the_servers_message(tmp_path):
    missing = tmp_path / "no-such-model.gguf"
    settings = make_settings(tmp_path / "state", PHI_LOCAL_MODEL_PATH=str(missing))
    with pytest.raises(LocalServerError) as err:
        ensure_local_server(settings, timeout=60)
    message = str(err.value)
    assert "exited during start-up" in message
    assert "Model file not found" in message and str(missing) in message
    assert "PHI_LOCAL_MODEL_PATH" in message
    assert read_state(settings) is None


def test_file_that_is_not_gguf_fails_with_the_servers_message(tmp_path):
    bogus = tmp_path / "model.gguf"
    bogus.write_text("<html>404 Not Found</html>")  # what a failed download often leaves
    settings = make_settings(tmp_path / "state", PHI_LOCAL_MODEL_PATH=str(bogus))
    with pytest.raises(LocalServerError) as err:
        ensure_local_server(settings, timeout=60)
    assert "not a GGUF model file" in str(err.value)
