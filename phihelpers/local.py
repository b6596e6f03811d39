"""Find or start the embedded local model server, shared by every notebook and kernel.

One server per state directory (private to this user: phihelpers.state): its state file
(`server.json`: pid, host, port, model, secret) is written by the server once it listens and
removed when it stops. A server is used, or signalled to stop, only if it answers a fresh
challenge with the state's secret (`probe`); a state file whose process is gone, whose port
answers as someone else, or that cannot answer the challenge is stale and replaced, and no key
or prompt goes to it. Starting is guarded by a file lock, so two kernels that start at once
share one server. A state directory that cannot be used is one LocalServerError sentence.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import time

from .config import Settings, load_settings
from .launcher import LocalServerError, is_live, launch, log_tail, pid_alive
from .server.settings import ServeSettings
from .state import (
    LOG_FILE,
    STATE_FILE,
    check_state_file,
    lock_file,
    open_private,
    private_dir,
    read_state,
    remove_state,
    url_of,
)

__all__ = [
    "LOG_FILE",
    "STATE_FILE",
    "LocalServerError",
    "ensure_local_server",
    "log_tail",
    "running_server",
    "stop_local_server",
    "url_of",
]


def running_server(settings: Settings | None = None) -> dict | None:
    """The state of a live server for these settings, or None (a stale state file is removed)."""
    settings = settings or load_settings()
    state = read_state(settings.state_dir)
    if state is None:
        return None
    # A busy server still answers /health from its event loop, but a loaded machine can be
    # slow: give a live process time before calling its state stale (and starting a second).
    if is_live(state, timeout=10.0):
        return state
    remove_state(settings.state_dir)
    return None


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


@contextlib.contextmanager
def _start_lock(settings: Settings):
    """Held while finding or starting the server; the state directory is checked first, so a
    directory that cannot be used is reported before anything is written into it."""
    private_dir(settings.state_dir)
    check_state_file(settings.state_dir)
    with open_private(lock_file(settings.state_dir)) as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _serve_settings(settings: Settings, port: int) -> ServeSettings:
    """The background server gets exactly these settings (a Settings built from another
    mapping, or changed in code, would otherwise be lost on the way to the child)."""
    return ServeSettings.build(
        host=settings.local_host,
        port=port,
        model=settings.local_model_path,
        n_ctx=settings.local_n_ctx,
        threads=settings.local_threads,
        parallel=settings.local_parallel,
        state_dir=settings.state_dir,
        api_key=settings.local_api_key,
    )


def _free_port_for(settings: Settings) -> int:
    port = settings.local_port
    if port_free(settings.local_host, port):
        return port
    if settings.local_port_explicit:
        raise LocalServerError(
            f"Port {port} on {settings.local_host} is taken by another program, so the "
            "local model server cannot start there. Stop that program or set "
            "PHI_LOCAL_PORT to a free port."
        )
    return 0  # the default port is busy: let the server pick a free one


def ensure_local_server(settings: Settings | None = None, timeout: float = 120.0) -> dict:
    """Return the state of the running local server, starting it in the background if needed."""
    settings = settings or load_settings()
    with _start_lock(settings):
        state = running_server(settings)
        if state:
            return state
        serve = _serve_settings(settings, _free_port_for(settings))
        env = {
            **os.environ,
            "PHI_MODEL": settings.model or "",
            "PHI_MODELS_DIR": str(settings.models_dir),
        }
        return launch(serve, env=env, detach=True, timeout=timeout).state


def stop_local_server(settings: Settings | None = None, timeout: float = 10.0) -> bool:
    """Stop the server these settings point at. Returns False if none was running."""
    settings = settings or load_settings()
    state = read_state(settings.state_dir)
    # Not running, or the pid was reused (or the port taken) by some other process, which
    # cannot answer the challenge: do not signal it.
    if state is None or not is_live(state):
        remove_state(settings.state_dir)
        return False
    pid = state["pid"]
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.05)
    if pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
    remove_state(settings.state_dir)
    return True
