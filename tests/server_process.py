"""Start a real `python -m phihelpers serve` subprocess of a test's own, with its own flags.

Used by the overload, fault and security tests, which need a server configured differently from
the session's shared one (a small queue, an API key, CORS, prompt logging...) or which kill it.
Every server gets its own state directory (and so its own server.json and server.log) and port 0.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

from secret_scan import find_secrets

from phihelpers.launcher import LocalServerError, ServerHandle, spawn, wait_until_ready
from phihelpers.state import log_file, state_file

ROOT = Path(__file__).resolve().parent.parent


def _session_key(name: str) -> str:
    """A key made fresh for each test session (so no committed file can hold it), the same in
    every xdist worker: derived from the session's random state dir, set by conftest.py."""
    seed = os.environ.get("PHI_STATE_DIR") or secrets.token_hex(16)
    digest = hashlib.sha256(f"{seed}/{name}".encode()).digest()
    return f"phi-{name}-" + base64.urlsafe_b64encode(digest[:24]).decode()


# API keys the tests use; tests/test_secrets.py checks that none reaches a log, a notebook or git.
TEST_KEYS = {"server": _session_key("server"), "wrong": _session_key("wrong")}

# Every log file a test server wrote this session, for tests/test_secrets.py.
LOG_FILES: list[Path] = []


@dataclass
class ServerProcess(ServerHandle):
    """A test's server: the launcher's handle, whose stop() also checks the log for secrets."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.state['port']}"

    @property
    def state_file(self) -> Path:
        return state_file(self.state_dir)

    @property
    def log_file(self) -> Path:
        return self.log_path

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, wait; SIGKILL if it will not go. Returns the exit code. Then its log is
        checked: no token-shaped string and no test key may be in it."""
        code = super().stop(timeout)
        leaks = find_secrets(self.log(), TEST_KEYS)
        assert not leaks, f"secrets in {self.log_file}: {leaks}"
        return code


def _test_env(state_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHI_LOCAL_")}
    env["PHI_STATE_DIR"] = str(state_dir)
    return env


def run_serve(state_dir: Path, *args: str, api_key: str | None = None) -> subprocess.Popen:
    """Raw access for failure cases: `serve --port 0 --state-dir <state_dir> <args>`, not waited
    for, logging to server.log (the launcher's spawn())."""
    LOG_FILES.append(log_file(state_dir))
    return spawn(
        state_dir, ["--port", "0", *args], api_key=api_key, env=_test_env(state_dir), cwd=ROOT
    )


def start_server(
    state_dir: Path, *args: str, api_key: str | None = None, timeout: float = 60.0
) -> ServerProcess:
    """Start a server and wait until its server.json names it and /health answers."""
    proc = run_serve(state_dir, *args, api_key=api_key)
    try:
        state = wait_until_ready(proc, state_dir, timeout)
    except LocalServerError as exc:
        proc.kill()
        proc.wait()
        raise RuntimeError(str(exc)) from None
    return ServerProcess(proc, state_dir, state, list(proc.args))
