"""Start a real `python -m phihelpers serve` subprocess of a test's own, with its own flags.

Used by the overload, fault and security tests, which need a server configured differently from
the session's shared one (a small queue, an API key, CORS, prompt logging...) or which kill it.
Every server gets its own state directory (and so its own server.json and server.log) and port 0.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from secret_scan import find_secrets

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
class ServerProcess:
    proc: subprocess.Popen
    state_dir: Path
    state: dict

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.state['port']}"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "server.json"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "server.log"

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, wait; SIGKILL if it will not go. Returns the exit code. Then its log is
        checked: no token-shaped string and no test key may be in it."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        leaks = find_secrets(self.log(), TEST_KEYS)
        assert not leaks, f"secrets in {self.log_file}: {leaks}"
        return self.proc.returncode


def run_serve(state_dir: Path, *args: str, api_key: str | None = None, **popen) -> subprocess.Popen:
    """`python -m phihelpers serve --port 0 --state-dir <state_dir> <args>`, logging to server.log."""
    state_dir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHI_LOCAL_")}
    env["PHI_STATE_DIR"] = str(state_dir)
    if api_key:
        env["PHI_LOCAL_API_KEY"] = api_key
    cmd = [
        sys.executable,
        "-m",
        "phihelpers",
        "serve",
        "--port",
        "0",
        "--state-dir",
        str(state_dir),
    ]
    log_file = state_dir / "server.log"
    LOG_FILES.append(log_file)
    with open(log_file, "ab") as log:
        return subprocess.Popen(
            [*cmd, *args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
            **popen,
        )


def start_server(
    state_dir: Path, *args: str, api_key: str | None = None, timeout: float = 60.0
) -> ServerProcess:
    """Start a server and wait until its server.json names it and /health answers."""
    proc = run_serve(state_dir, *args, api_key=api_key)
    state_file = state_dir / "server.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log = (state_dir / "server.log").read_text(errors="replace")
            raise RuntimeError(f"server exited with {proc.returncode} during start-up:\n{log}")
        try:
            state = json.loads(state_file.read_text())
            if state.get("pid") == proc.pid:
                r = httpx.get(f"http://127.0.0.1:{state['port']}/health", timeout=2)
                if r.status_code == 200:
                    return ServerProcess(proc, state_dir, state)
        except (OSError, ValueError, httpx.HTTPError):
            pass
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    raise RuntimeError(f"server did not answer within {timeout} s")
