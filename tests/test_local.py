"""phihelpers.local: find or start the background server, stale state, stop without zombies.

Every test here uses its own state directory and port 0, so it never touches the session's
server (or a learner's); every server a test starts is stopped in teardown.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import secrets
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from azure.ai.inference.models import UserMessage

from phihelpers import launcher
from phihelpers import state as state_files
from phihelpers.clients import chat_client, connect, openai_client
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


# -- the client proves it reaches the server it started: impostors get no key, no prompt ----

KEY = "local-test-key-" + secrets.token_hex(16)
PROMPT = "a prompt only the real server may see " + secrets.token_hex(8)
CHAT_REPLY = {
    "id": "chatcmpl-impostor",
    "object": "chat.completion",
    "created": 0,
    "model": "smollm2-135m-instruct",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}


class Impostor:
    """An HTTP server on 127.0.0.1 that mimics ours perfectly (its /health has every field and
    names the state file's pid; chat gets a chat completion) except the challenge, which it
    cannot answer without the state's secret. It records every request it receives."""

    def __init__(self, pid: int, port: int = 0):
        self.requests: list[dict] = []
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), self._handler(pid))
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _handler(self, pid: int):
        record = self.requests.append

        class Handler(http.server.BaseHTTPRequestHandler):
            def _reply(self, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _record(self) -> None:
                size = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(size).decode(errors="replace") if size else ""
                record({"method": self.command, "path": self.path, "body": body,
                        "headers": dict(self.headers.items())})  # fmt: skip

            def do_GET(self) -> None:
                self._record()
                nonce = self.headers.get("X-Phihelpers-Challenge", "")
                self._reply(
                    {"status": "ok", "server": "phihelpers", "pid": pid,
                     "model": "smollm2-135m-instruct", "generating": 0, "queued": 0,
                     "proof": hashlib.sha256(nonce.encode()).hexdigest()}  # its best guess
                    if self.path.startswith("/health")
                    else {"object": "list", "data": [{"id": "smollm2-135m-instruct"}]}
                )  # fmt: skip

            def do_POST(self) -> None:
                self._record()
                self._reply(CHAT_REPLY)

            def log_message(self, *_args) -> None:
                pass

        return Handler

    def __enter__(self) -> Impostor:
        self.thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    def assert_learned_nothing(self) -> None:
        """It was asked (the challenge, which it failed), and it saw no key and no prompt."""
        assert self.requests, "the client never asked it"
        for request in self.requests:
            assert request["method"] == "GET" and request["path"] == "/health", request
            headers = {name.lower() for name in request["headers"]}
            assert not headers & {"authorization", "api-key", "cookie"}, request["headers"]
            assert KEY not in json.dumps(request) and PROMPT not in json.dumps(request)


@pytest.fixture
def keyed(tmp_path):
    """Settings for a private server that requires KEY; stopped afterwards."""
    settings = make_settings(tmp_path / "state", PHI_LOCAL_API_KEY=KEY)
    yield settings
    stop_local_server(settings)


def test_a_planted_state_file_is_refused_and_the_impostor_gets_no_key(keyed):
    stranger = subprocess.Popen(["sleep", "120"])  # the live pid the planted file names
    real = None
    try:
        with Impostor(pid=stranger.pid) as impostor:
            planted = {
                "pid": stranger.pid, "host": "127.0.0.1", "port": impostor.port,
                "model": "smollm2-135m-instruct", "key_required": True,
                "secret": secrets.token_hex(32),  # not the one a real server holds
            }  # fmt: skip
            state_files.write_state(keyed.state_dir, planted)
            reply = chat_client(keyed).complete(messages=[UserMessage(PROMPT)], max_tokens=1)
            real = read_state(keyed)  # connect() refused it and started the real server
            assert real["port"] != impostor.port and real["pid"] != stranger.pid
            assert reply.id != CHAT_REPLY["id"]

            state_files.write_state(keyed.state_dir, planted)
            assert running_server(keyed) is None
            assert not state_path(keyed).exists()  # refused, and removed as stale

            state_files.write_state(keyed.state_dir, planted)
            assert stop_local_server(keyed) is False
            assert stranger.poll() is None  # not signalled
        impostor.assert_learned_nothing()
    finally:
        stranger.kill()
        stranger.wait()
        if real:
            state_files.write_state(keyed.state_dir, real)  # for the teardown to stop it


def test_a_squatted_port_is_refused_and_the_impostor_gets_no_key(keyed, monkeypatch):
    first = ensure_local_server(keyed)
    os.kill(first["pid"], signal.SIGKILL)
    assert wait_until_gone(first["pid"]) is None
    assert read_state(keyed)["pid"] == first["pid"]  # kill -9 left its state file behind
    # Meanwhile another program got its pid (pid reuse, which a test cannot arrange)...
    alive = launcher.pid_alive
    monkeypatch.setattr(launcher, "pid_alive", lambda pid: pid == first["pid"] or alive(pid))
    with Impostor(pid=first["pid"], port=first["port"]) as impostor:  # ...and its port
        settings = connect(keyed)
        reply = openai_client(settings).chat.completions.create(
            model=settings.model, messages=[{"role": "user", "content": PROMPT}], max_tokens=1
        )
        assert reply.id != CHAT_REPLY["id"]  # the real server answered
        second = read_state(keyed)
        assert second["pid"] != first["pid"] and second["port"] != first["port"]
        assert settings.endpoint == url_of(second)
    impostor.assert_learned_nothing()


# -- a state directory private to its user; its faults are one sentence ---------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def one_sentence(text: str) -> bool:
    text = text.strip()
    return "\n" not in text and text.endswith(".") and ". " not in text


def phi_start(state_dir: Path) -> subprocess.CompletedProcess:
    """`python -m phihelpers start`, as a user runs it, with this state directory."""
    env = {k: v for k, v in os.environ.items() if k != "PHI_LOCAL_API_KEY"}
    env.update(PHI_STATE_DIR=str(state_dir), PHI_LOCAL_PORT="0")
    return subprocess.run(
        [sys.executable, "-m", "phihelpers", "start"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def assert_one_sentence_error(done: subprocess.CompletedProcess, *phrases: str) -> None:
    assert done.returncode == 2 and done.stdout == "", done.stdout + done.stderr
    error = done.stderr.strip()
    assert error.startswith("error: ") and one_sentence(error), done.stderr
    assert "Traceback" not in error and all(p in error for p in phrases), error


def test_the_state_directory_and_its_files_are_private_to_the_user(own):
    own.state_dir.mkdir(parents=True)
    own.state_dir.chmod(0o755)  # what earlier versions left
    for name in (state_files.LOG_FILE, state_files.LOCK_FILE):
        (own.state_dir / name).write_text("")
        (own.state_dir / name).chmod(0o644)
    ensure_local_server(own)
    assert mode(own.state_dir) == 0o700
    files = (state_files.STATE_FILE, state_files.LOG_FILE, state_files.LOCK_FILE)
    assert {name: mode(own.state_dir / name) for name in files} == dict.fromkeys(files, 0o600)


@pytest.mark.parametrize("how", ["world-writable", "group-writable", "another user's"])
def test_a_state_directory_not_the_users_alone_is_refused_in_one_sentence(own, how):
    own.state_dir.mkdir(parents=True)
    try:
        if how == "another user's":
            try:
                os.chown(own.state_dir, 54321, -1)  # root passes access checks: owner and
            except PermissionError:  # mode bits must decide
                pytest.skip("chown needs root")
        else:
            own.state_dir.chmod(0o777 if how == "world-writable" else 0o770)
        with pytest.raises(LocalServerError) as err:
            ensure_local_server(own)
        assert one_sentence(str(err.value)) and "PHI_STATE_DIR" in str(err.value)
        with pytest.raises(LocalServerError):
            running_server(own)
        assert_one_sentence_error(phi_start(own.state_dir), str(own.state_dir))
        assert list(own.state_dir.iterdir()) == []  # nothing started, nothing written
    finally:
        os.chown(own.state_dir, os.geteuid(), -1)
        own.state_dir.chmod(0o700)


def test_a_state_file_that_is_a_directory_is_one_sentence_with_nothing_left(own):
    own.state_dir.mkdir(parents=True, mode=0o700)
    state_path(own).mkdir()
    try:
        assert_one_sentence_error(phi_start(own.state_dir), "is a directory", "PHI_STATE_DIR")
        with pytest.raises(LocalServerError) as err:
            connect(own)
        assert one_sentence(str(err.value))
        assert [p.name for p in own.state_dir.iterdir()] == [state_files.STATE_FILE]
    finally:
        state_path(own).rmdir()


def test_a_state_directory_that_cannot_be_created_is_one_sentence(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    state_dir = blocker / "state"
    assert_one_sentence_error(phi_start(state_dir), str(state_dir), "PHI_STATE_DIR")
    with pytest.raises(LocalServerError) as err:
        connect(make_settings(state_dir))
    assert one_sentence(str(err.value)) and "PHI_STATE_DIR" in str(err.value)
    assert [p.name for p in tmp_path.iterdir()] == ["a-file"]
    assert blocker.read_text() == "not a directory"
