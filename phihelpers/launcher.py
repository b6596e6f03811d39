"""Start a `python -m phihelpers serve` process, wait until it answers, and stop it again.

The one place in the code base that starts a server process. Everything else calls it:

    handle = launch(ServeSettings.build(port=0, state_dir=d, max_queue=2))   # waits for /health
    handle.endpoint, handle.state, handle.log_path
    handle.stop()                                                           # SIGTERM, then KILL

`spawn()` is the raw step underneath (no waiting), for a caller that watches the process itself
(a benchmark timing the cold start, a test of a server that must fail to start). `probe()` is
how every client tells the server a state file names from an impostor on its port: a fresh
challenge only the holder of the state's secret can answer (phihelpers.state), and no key.
"""

from __future__ import annotations

import contextlib
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from .server.settings import ServeSettings
from .state import (
    CHALLENGE_HEADER,
    LocalServerError,
    answers_challenge,
    log_file,
    new_nonce,
    open_private,
    private_dir,
    read_state,
    url_of,
)

START_TIMEOUT = 120.0
# How often wait_until_ready looks: a start takes about half a second (a look costs ~0.1 ms
# until the state file appears), so each 10 ms of the interval is ~2% of a start.
POLL_INTERVAL = 0.01
# A state's URL is always plain http:// on this machine (url_of), so no certificate is ever
# checked; httpx would otherwise read the whole CA bundle for every probe (~30 ms of CPU, beside
# a server that is starting). An https:// URL would fail here, for want of trusted CAs.
_NO_TLS = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def log_tail(path: Path, lines: int = 15) -> str:
    """The last lines of a server log, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still "exists" for kill(0); it does not serve.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def probe_client() -> httpx.Client:
    """A client for `probe`: it sends no key, nor anything from the environment (no proxy, no
    .netrc)."""
    return httpx.Client(trust_env=False, verify=_NO_TLS)


def probe(state: dict, timeout: float = 2.0, client: httpx.Client | None = None) -> dict | None:
    """GET /health with a fresh challenge; the health document if the answer comes from the
    process the state file names and proves it holds the state's secret, else None.

    It sends no key (nor anything from the environment: no proxy, no .netrc), so a process
    that squats the port learns nothing from being asked. `client`: one from probe_client()
    to use (else a new one)."""
    nonce = new_nonce()
    try:
        with contextlib.nullcontext(client) if client else probe_client() as http:
            r = http.get(
                url_of(state) + "/health", headers={CHALLENGE_HEADER: nonce}, timeout=timeout
            )
        health = r.json()
    except (httpx.HTTPError, ValueError):
        return None
    if (
        r.status_code == 200
        and isinstance(health, dict)
        and health.get("server") == "phihelpers"
        and health.get("pid") == state["pid"]
        and answers_challenge(state, nonce, health.get("proof"))
    ):
        return health
    return None


def is_live(state: dict, timeout: float = 2.0) -> bool:
    """The process a state file names is running and proves it wrote that file (`probe`)."""
    return pid_alive(state["pid"]) and probe(state, timeout=timeout) is not None


def spawn(
    state_dir: Path,
    args: Sequence[str] = (),
    *,
    api_key: str | None = None,
    env: Mapping[str, str] | None = None,
    detach: bool = False,
    cwd: Path | None = None,
) -> subprocess.Popen:
    """Start `python -m phihelpers serve --state-dir DIR ARGS`, its output in DIR/server.log.

    `api_key` becomes the server's PHI_LOCAL_API_KEY (None: no key, whatever `env` says); it
    travels in the environment, never on the command line. `detach`: its own session, so a
    kernel interrupt does not reach it, and reaped in the background so it never lingers as a
    zombie of this process.
    """
    state_dir = private_dir(state_dir)
    child_env = dict(os.environ if env is None else env)
    child_env["PHI_BACKEND"] = "local"  # the server reads PHI_LOCAL_*, whatever backend we use
    child_env.pop("PHI_LOCAL_API_KEY", None)
    if api_key:
        child_env["PHI_LOCAL_API_KEY"] = api_key
    command = [sys.executable, "-m", "phihelpers", "serve", *args]
    if "--state-dir" not in args:
        command += ["--state-dir", str(state_dir)]
    with open_private(log_file(state_dir)) as log:
        proc = subprocess.Popen(
            command,
            env=child_env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=detach,
            close_fds=True,
        )
    if detach:
        threading.Thread(target=proc.wait, name="phi-server-reaper", daemon=True).start()
    return proc


def wait_until_ready(
    proc: subprocess.Popen, state_dir: Path, timeout: float = START_TIMEOUT
) -> dict:
    """The state of `proc` once it listens and answers /health; LocalServerError if it exits
    first or takes longer than `timeout` (the error carries the end of its log)."""
    log = log_file(state_dir)
    deadline = time.monotonic() + timeout
    # Made now, while the server starts: a process's first httpx client imports httpcore & co.
    with probe_client() as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise LocalServerError(
                    f"The local model server exited during start-up (code {proc.returncode}). "
                    f"The end of its log ({log}):\n{log_tail(log)}"
                )
            state = read_state(state_dir)
            if state and state["pid"] == proc.pid and probe(state, timeout=1.0, client=client):
                return state
            time.sleep(POLL_INTERVAL)
    raise LocalServerError(
        f"The local model server did not answer within {timeout:.0f} s. Its log ({log}):\n"
        f"{log_tail(log)}"
    )


@dataclass
class ServerHandle:
    """A running server this process started. `endpoint` is what the SDKs take."""

    proc: subprocess.Popen
    state_dir: Path
    state: dict
    command: list[str] = field(default_factory=list)  # the key is in its env, not here

    @property
    def endpoint(self) -> str:
        return url_of(self.state)

    @property
    def log_path(self) -> Path:
        return log_file(self.state_dir)

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM (a clean shutdown), then SIGKILL if it will not go. Returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def launch(
    settings: ServeSettings,
    *,
    env: Mapping[str, str] | None = None,
    detach: bool = False,
    cwd: Path | None = None,
    timeout: float = START_TIMEOUT,
) -> ServerHandle:
    """Start a server with these settings (state_dir required) and wait until it answers."""
    if settings.state_dir is None:
        raise ValueError("launch() needs settings with a state_dir")
    proc = spawn(
        settings.state_dir,
        settings.command_line(),
        api_key=settings.api_key,
        env=env,
        detach=detach,
        cwd=cwd,
    )
    try:
        state = wait_until_ready(proc, settings.state_dir, timeout)
    except BaseException:
        if proc.poll() is None:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        raise
    return ServerHandle(proc, Path(settings.state_dir), state, list(proc.args))
