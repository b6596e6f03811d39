"""phihelpers.cli: `doctor`, `start`/`status`/`stop` and `serve`, run as a user runs them.

Each command runs in a subprocess with exactly the environment it needs. Servers a test starts
live in a tmp state directory on port 0 and are stopped in teardown; keys never appear in
any output.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from phihelpers.config import load_settings
from phihelpers.local import stop_local_server
from phihelpers.state import read_state

SECRET = "phi-test-key-7d1c0a9e5b3f"


def phi(*args: str, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "phihelpers", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def private_env(state_dir: Path, **extra: str) -> dict[str, str]:
    """The session's environment, pointed at a private state dir (so: a private server)."""
    env = {k: v for k, v in os.environ.items() if k != "PHI_LOCAL_API_KEY"}
    return {**env, "PHI_STATE_DIR": str(state_dir), "PHI_LOCAL_PORT": "0", **extra}


def test_doctor_on_the_session_server(endpoint):
    done = phi("doctor", env=dict(os.environ))
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert re.search(r"^backend:\s+local$", out, re.M)
    assert re.search(rf"^endpoint:\s+{re.escape(endpoint)}\b", out, re.M)
    assert re.search(r"^model:\s+\S", out, re.M)
    assert re.search(r"^key:\s+not set$", out, re.M)
    assert re.search(r"^answers:\s+HTTP 200$", out, re.M)
    assert re.search(r"^\s+model_name: \S+", out, re.M)  # the /info document
    assert re.search(r"^\s+model_type: chat_completion$", out, re.M)


def test_doctor_when_no_server_runs(tmp_path):
    done = phi("doctor", env=private_env(tmp_path))
    assert done.returncode == 0
    assert "not running" in done.stdout
    assert (
        read_state(load_settings(env={"PHI_STATE_DIR": str(tmp_path)}).state_dir) is None
    )  # not started


@pytest.fixture
def keyed_server_env(tmp_path):
    """A private server that requires SECRET, started with `python -m phihelpers start`."""
    env = private_env(tmp_path / "state", PHI_LOCAL_API_KEY=SECRET)
    yield env
    stop_local_server(load_settings(env={"PHI_STATE_DIR": env["PHI_STATE_DIR"]}))


def test_start_doctor_status_stop_with_a_key_never_show_it(keyed_server_env):
    env = keyed_server_env
    started = phi("start", env=env)
    assert started.returncode == 0, started.stderr
    assert "local model server: http://127.0.0.1:" in started.stdout
    state = read_state(load_settings(env={"PHI_STATE_DIR": env["PHI_STATE_DIR"]}).state_dir)
    assert state["key_required"] is True

    doctor = phi("doctor", env=env)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert re.search(r"^key:\s+set$", doctor.stdout, re.M)
    assert re.search(r"^answers:\s+HTTP 200$", doctor.stdout, re.M)

    wrong = phi("doctor", env={**env, "PHI_LOCAL_API_KEY": "not-the-key"})
    assert wrong.returncode != 0
    assert re.search(r"^answers:\s+HTTP 401$", wrong.stdout, re.M)

    status = phi("status", env=env)
    assert status.returncode == 0 and f"pid {state['pid']}" in status.stdout

    # The key is in none of what a user (or a log collector, or `ps`) sees.
    cmdline = Path(f"/proc/{state['pid']}/cmdline").read_bytes().decode(errors="replace")
    log = (Path(env["PHI_STATE_DIR"]) / "server.log").read_text(errors="replace")
    for text in (
        started.stdout,
        started.stderr,
        doctor.stdout,
        doctor.stderr,
        wrong.stdout,
        wrong.stderr,
        status.stdout,
        cmdline,
        log,
    ):
        assert SECRET not in text

    stopped = phi("stop", env=env)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    after = phi("status", env=env)
    assert after.returncode == 1 and "no local model server" in after.stdout


def test_doctor_on_the_azure_backend_never_shows_the_key(endpoint):
    env = {
        **os.environ,
        "PHI_BACKEND": "azure",
        "AZURE_AI_ENDPOINT": endpoint,  # the session server speaks the same API
        "AZURE_AI_API_KEY": SECRET,
    }
    done = phi("doctor", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"^backend:\s+azure$", done.stdout, re.M)
    assert re.search(r"^key:\s+set$", done.stdout, re.M)
    assert SECRET not in done.stdout + done.stderr


def test_doctor_explains_that_github_models_is_retired(tmp_path):
    env = private_env(tmp_path, PHI_BACKEND="github", GITHUB_TOKEN=SECRET)
    done = phi("doctor", env=env)
    assert done.returncode != 0
    assert "retired" in done.stdout and "410" in done.stdout
    assert "PHI_BACKEND=local" in done.stdout  # what to do instead
    assert "Traceback" not in done.stdout + done.stderr
    assert SECRET not in done.stdout + done.stderr


def test_doctor_names_a_missing_variable(tmp_path):
    done = phi("doctor", env=private_env(tmp_path, PHI_BACKEND="azure"))
    assert done.returncode != 0
    assert "AZURE_AI_ENDPOINT" in done.stdout and "AZURE_AI_API_KEY" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr


def test_setup_check_reports_a_missing_model_file_plainly(tmp_path):
    missing = tmp_path / "phi-4-mini.gguf"
    done = phi(
        "doctor", "--quiet-check", env=private_env(tmp_path, PHI_LOCAL_MODEL_PATH=str(missing))
    )
    assert done.returncode != 0
    assert "Model file not found" in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def test_setup_check_finds_the_shipped_model(tmp_path):
    done = phi("doctor", "--quiet-check", env=private_env(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("local model: ") and ".gguf" in done.stdout


def test_serve_on_a_busy_port_exits_with_a_clear_message(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = phi(
            "serve", "--port", str(port), "--state-dir", str(tmp_path), env=private_env(tmp_path)
        )
    assert done.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "--port" in done.stderr and "PHI_LOCAL_PORT" in done.stderr  # what to do
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "server.json").exists()


def test_serve_refuses_a_public_address_without_a_key(tmp_path):
    done = phi(
        "serve",
        "--host",
        "0.0.0.0",
        "--port",
        "0",
        "--state-dir",
        str(tmp_path),
        env=private_env(tmp_path),
    )
    assert done.returncode != 0
    assert "refusing to listen on 0.0.0.0 without an API key" in done.stderr
    assert "PHI_LOCAL_API_KEY" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "server.json").exists()
