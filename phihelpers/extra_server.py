"""A throwaway second local model server, for lessons that need special server settings.

Lesson 07 wants a server with a rate limit, a key and a content filter, without touching the
shared server every other notebook uses. This starts `python -m phihelpers serve` on a free
port with its own temporary state directory, and stops it (and removes the directory) again:

    with start_extra_server("--rate-limit-rpm", "3", api_key=key) as server:
        server.endpoint        # http://127.0.0.1:<port>

or, across notebook cells, `server = start_extra_server(...)` ... `server.stop()`.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .local import STATE_FILE, LocalServerError, log_tail, probe, url_of


class ExtraServer:
    """One extra server process. `endpoint` is what ChatCompletionsClient(endpoint=...) takes."""

    def __init__(self, proc: subprocess.Popen, state_dir: Path, state: dict):
        self.proc = proc
        self.command: list[str] = list(proc.args)  # the key, if any, is in its env, not here
        self.state_dir = state_dir
        self.state = state
        self.endpoint = url_of(state)

    @property
    def log_path(self) -> Path:
        return self.state_dir / "server.log"

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the process (SIGTERM, then SIGKILL) and remove its state directory."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.state_dir, ignore_errors=True)
        atexit.unregister(self.stop)

    def __enter__(self) -> ExtraServer:
        return self

    def __exit__(self, *_exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        alive = "running" if self.running else "stopped"
        return f"ExtraServer({self.endpoint!r}, pid={self.proc.pid}, {alive})"


def start_extra_server(
    *serve_args: str, api_key: str | None = None, timeout: float = 120.0
) -> ExtraServer:
    """Start `python -m phihelpers serve --port 0 <serve_args>` on 127.0.0.1 and wait for it.

    `api_key` becomes the server's PHI_LOCAL_API_KEY (None: the server needs no key, whatever
    the caller's environment says). Raises LocalServerError with the log tail if it won't start.
    """
    state_dir = Path(tempfile.mkdtemp(prefix="phihelpers-extra-"))
    env = dict(os.environ)
    env.pop("PHI_LOCAL_API_KEY", None)
    if api_key:
        env["PHI_LOCAL_API_KEY"] = api_key
    cmd = [
        sys.executable, "-m", "phihelpers", "serve",
        "--host", "127.0.0.1", "--port", "0", "--state-dir", str(state_dir),
        *serve_args,
    ]  # fmt: skip
    log_file = state_dir / "server.log"
    with open(log_file, "wb") as log:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env
        )
    state_file = state_dir / STATE_FILE
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_tail(log_file)
            shutil.rmtree(state_dir, ignore_errors=True)
            raise LocalServerError(
                f"The extra server exited during start-up (code {proc.returncode}):\n{tail}"
            )
        with contextlib.suppress(OSError, ValueError):
            state = json.loads(state_file.read_text())
            if state.get("pid") == proc.pid and probe(state, timeout=1.0):
                server = ExtraServer(proc, state_dir, state)
                atexit.register(server.stop)  # a forgotten stop() still ends it with the kernel
                return server
        time.sleep(0.1)
    tail = log_tail(log_file)
    proc.kill()
    proc.wait()
    shutil.rmtree(state_dir, ignore_errors=True)
    raise LocalServerError(f"The extra server did not answer within {timeout:.0f} s:\n{tail}")
