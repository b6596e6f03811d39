"""Faults: clients that hang up, SIGTERM mid-stream, a busy port, a stale state file, a bad model.

Each test runs a server of its own (`python -m phihelpers serve --port 0` in a temp state dir).
Times are printed, and asserted only with generous bounds: the machine is shared and noisy.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
from server_process import ROOT, run_serve, start_server

LONG = [{"role": "user", "content": "Count from 1 to 1000, one number per line."}]
ONE_TOKEN = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
GENEROUS = 5.0  # seconds; the real figure is printed


@pytest.fixture
def server(tmp_path):
    # One slot, so that a second request waits in the queue behind the first (the queue's
    # faults); hang-ups beside other answers in slots: tests/test_server_parallel.py.
    server = start_server(tmp_path / "state", "--parallel", "1")
    yield server
    server.stop()


def wait_for_log(server, text: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = server.log()
        if text in log:
            return log
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not in the server log:\n{server.log()[-2000:]}")


def seconds_until_free(url: str, timeout: float = 60.0) -> float:
    """Poll /health until the model is neither generating nor has a queue."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        health = httpx.get(url + "/health", timeout=10).json()
        if health["generating"] == 0 and health["queued"] == 0:
            return time.perf_counter() - started
        time.sleep(0.01)
    raise AssertionError("the model stayed busy")


def timed_one_token(url: str) -> float:
    started = time.perf_counter()
    r = httpx.post(url + "/chat/completions", json=ONE_TOKEN, timeout=60)
    assert r.status_code == 200
    return time.perf_counter() - started


def test_a_client_that_disconnects_mid_stream_frees_the_model(server):
    idle = timed_one_token(server.url)  # for comparison: a 1-token answer on an idle server
    body = {"messages": LONG, "max_tokens": 2000, "stream": True}
    with httpx.Client(base_url=server.url, timeout=60) as client:
        with client.stream("POST", "/chat/completions", json=body) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            for _ in range(10):  # a few tokens in: it is generating
                next(lines)
    freed = seconds_until_free(server.url)  # from the moment the connection was closed
    next_answer = timed_one_token(server.url)
    log = wait_for_log(server, "the client went away")
    stopped_after = int(log.split("generation stopped after ")[1].split()[0])
    print(
        f"\ndisconnect -> model free: {freed:.3f} s; the next 1-token answer then took "
        f"{next_answer:.3f} s (on the idle server before: {idle:.3f} s); the abandoned "
        f"generation stopped after {stopped_after} of 2000 tokens"
    )
    assert stopped_after < 2000
    assert freed < GENEROUS


def test_a_client_that_disconnects_while_its_long_prompt_is_read_frees_the_model(server):
    """Reading a 3000-token prompt is one long llama.cpp call; it is aborted, not finished."""
    body = {"messages": long_prompt(), "stream": True}
    with httpx.Client(base_url=server.url, timeout=60) as client:
        with client.stream("POST", "/chat/completions", json=body) as r:
            assert r.status_code == 200
            lines = r.iter_lines()  # kept: a dropped iterator closes the connection
            next(lines)  # the role chunk: the prompt is being read now
    freed = seconds_until_free(server.url)
    wait_for_log(server, "generation stopped after 0 tokens: the client went away")
    r = httpx.post(
        server.url + "/chat/completions",
        json={"messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 5},
        timeout=60,
    )  # the model is fine after an aborted read
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] > 0
    print(f"\ndisconnect while reading a long prompt -> model free: {freed:.3f} s")
    assert freed < GENEROUS


def long_prompt() -> list[dict]:
    """About 3000 tokens, different each time (so no cached prefix shortens reading it):
    reading it takes llama.cpp seconds on this kind of machine."""
    return [{"role": "user", "content": f"{uuid.uuid4()} " + "hello world " * 1500}]


def test_a_client_that_gives_up_unstreamed_or_queued_frees_its_place(server):
    """An unstreamed request whose client times out, and one waiting in the queue whose client
    times out, are both dropped: the model is free again at once."""

    def impatient() -> None:
        with pytest.raises(httpx.TimeoutException):
            httpx.post(
                server.url + "/chat/completions",
                json={"messages": long_prompt(), "max_tokens": 2000},
                timeout=0.5,
            )

    def went_away() -> int:
        return server.log().count("went away while waiting")

    # 1) unstreamed: the client gives up while its prompt is read or its answer generated
    impatient()
    unstreamed = seconds_until_free(server.url)
    timed_one_token(server.url)

    # 2) queued: a stream holds the model, a second client waits behind it and gives up
    body = {"messages": long_prompt(), "max_tokens": 2000, "stream": True}
    with httpx.Client(base_url=server.url, timeout=60) as client:
        with client.stream("POST", "/chat/completions", json=body) as r:
            lines = r.iter_lines()  # kept: a dropped iterator closes the connection
            next(lines)  # the role chunk: this stream holds the model
            before = went_away()
            impatient()
            deadline = time.monotonic() + 10
            while went_away() == before:
                assert time.monotonic() < deadline, "the queued client was not noticed"
                time.sleep(0.05)
            health = httpx.get(server.url + "/health").json()
            assert health["queued"] == 0 and health["generating"] == 1  # the stream goes on
    queued = seconds_until_free(server.url)
    timed_one_token(server.url)
    print(f"\nfreed after: unstreamed {unstreamed:.3f} s, queued {queued:.3f} s")
    assert unstreamed < GENEROUS and queued < GENEROUS


def test_sigterm_mid_stream_shuts_down_cleanly(server):
    """Exit code 0, the state file removed, the stream ended with an error event (no fake
    finish), a queued request answered 503, and no traceback in the log."""
    body = {"messages": LONG, "max_tokens": 2000, "stream": True}
    events: list[bytes] = []
    queued: list = []
    with httpx.Client(base_url=server.url, timeout=60) as client:
        with client.stream("POST", "/chat/completions", json=body) as r:
            lines = r.iter_lines()
            for _ in range(4):  # the role chunk, then text: the model is generating
                events.append(next(lines))

            def waiter():
                r = httpx.post(server.url + "/chat/completions", json=ONE_TOKEN, timeout=60)
                queued.append(r)

            t = threading.Thread(target=waiter)
            t.start()
            deadline = time.monotonic() + 10
            while httpx.get(server.url + "/health").json()["queued"] == 0:
                assert time.monotonic() < deadline
                time.sleep(0.01)  # until the second request is in the queue
            signalled = time.perf_counter()
            server.proc.send_signal(signal.SIGTERM)
            events.extend(line for line in lines if line)  # to the end the server gives it
            t.join(30)
    code = server.proc.wait(30)
    took = time.perf_counter() - signalled
    print(f"\nSIGTERM mid-stream -> exit {code} in {took:.2f} s")
    assert code == 0
    assert not server.state_file.exists()
    last = json.loads(events[-1].removeprefix("data: "))
    assert last["error"]["code"] == "server_shutting_down"
    assert "data: [DONE]" not in events
    assert queued and queued[0].status_code == 503
    assert queued[0].json()["error"]["code"] == "server_shutting_down"
    log = server.log()
    assert "Traceback" not in log and "ERROR" not in log, log[-3000:]
    assert "generation stopped after" in log and "shutting down" in log


def test_a_busy_port_gives_a_clear_message(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = run_serve(tmp_path / "state", "--port", str(port))
        assert proc.wait(60) != 0
    out = (tmp_path / "state" / "server.log").read_text()
    assert f"cannot listen on 127.0.0.1:{port}" in out and "--port" in out
    assert "Traceback" not in out


def _cli(state_dir: Path, *args: str, **env) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PHI_")}
    environ.update(PHI_BACKEND="local", PHI_STATE_DIR=str(state_dir), PHI_LOCAL_PORT="0", **env)
    return subprocess.run(
        [sys.executable, "-m", "phihelpers", *args],
        capture_output=True,
        text=True,
        env=environ,
        cwd=ROOT,
        timeout=180,
    )


def test_a_stale_state_file_is_detected_and_replaced(tmp_path):
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that no longer runs
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # and a port nobody listens on
    stale = {"pid": gone.pid, "host": "127.0.0.1", "port": port, "model": "x"}
    (state_dir / "server.json").write_text(json.dumps(stale))

    status = _cli(state_dir, "status")
    assert status.returncode == 1 and "no local model server is running" in status.stdout
    assert not (state_dir / "server.json").exists(), "the stale file is removed"

    (state_dir / "server.json").write_text(json.dumps({**stale, "pid": os.getpid()}))  # alive,
    try:  # but not a server: still stale
        started = _cli(state_dir, "start")
        assert started.returncode == 0, started.stderr
        assert "local model server: http://127.0.0.1:" in started.stdout
        state = json.loads((state_dir / "server.json").read_text())
        assert state["pid"] != os.getpid() and state["port"] != port
    finally:
        stopped = _cli(state_dir, "stop")
    assert stopped.returncode == 0 and stopped.stdout.strip() == "stopped"
    assert "Traceback" not in started.stderr + stopped.stderr + status.stderr


@pytest.fixture(scope="module")
def bad_models(tmp_path_factory) -> dict[str, Path]:
    from phihelpers.server.engine import default_model_path

    d = tmp_path_factory.mktemp("bad-models")
    real = default_model_path()
    garbage = d / "garbage.gguf"
    garbage.write_bytes(os.urandom(1_000_000))
    truncated = d / "truncated.gguf"
    with real.open("rb") as src, truncated.open("wb") as dst:
        dst.write(src.read(real.stat().st_size // 2))
    header_only = d / "header-then-garbage.gguf"
    header_only.write_bytes(b"GGUF\x03\x00\x00\x00" + os.urandom(100_000))
    empty = d / "empty.gguf"
    empty.write_bytes(b"")
    return {
        "garbage": garbage,
        "truncated": truncated,
        "header_then_garbage": header_only,
        "empty": empty,
        "missing": d / "missing.gguf",
    }


@pytest.mark.parametrize(
    "kind,says",
    [
        ("garbage", "is not a GGUF model file"),
        ("empty", "is not a GGUF model file"),
        ("truncated", "may be corrupt or truncated"),
        ("header_then_garbage", "may be corrupt or truncated"),
        ("missing", "Model file not found"),
    ],
)
def test_a_bad_model_file_gives_a_clear_message(tmp_path, bad_models, kind, says):
    proc = run_serve(tmp_path / "state", "--model", str(bad_models[kind]))
    assert proc.wait(120) == 2
    out = (tmp_path / "state" / "server.log").read_text()
    assert says in out and str(bad_models[kind]) in out
    assert "Traceback" not in out
    assert not (tmp_path / "state" / "server.json").exists()


def test_a_bad_model_file_reaches_a_notebook_user_as_one_clear_error(tmp_path, bad_models):
    """What `connect()` (python -m phihelpers start) says when the server cannot load its model."""
    result = _cli(tmp_path / "state", "start", PHI_LOCAL_MODEL_PATH=str(bad_models["garbage"]))
    assert result.returncode == 2
    assert "exited during start-up" in result.stderr
    assert "is not a GGUF model file" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_an_idle_connection_outlives_a_retry_after_wait(endpoint):
    """An SDK that waits out a Retry-After (up to 5 s for short windows, 60 s for the default
    one) then reuses its pooled connection: the server must not have closed it meanwhile.
    uvicorn's default keep-alive of 5 s made such a retry fail with 'connection reset'."""
    host, port = endpoint.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", "/health")
        first = conn.getresponse()
        assert first.status == 200 and first.read()
        sock = conn.sock
        time.sleep(6)  # longer than uvicorn's default keep-alive
        conn.request("GET", "/health")  # on the same socket: http.client does not reconnect
        assert conn.sock is sock
        second = conn.getresponse()  # RemoteDisconnected if the server closed it
        assert second.status == 200 and second.read()
    finally:
        conn.close()
