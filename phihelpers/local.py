"""Find or start the embedded local model server, shared by every notebook and kernel.

One server per state directory: its state file (`server.json`: pid, host, port, model) is
written by the server once it listens and removed when it stops. A state file whose process is
gone, or whose port answers as someone else, is stale and replaced. Starting is guarded by a
file lock, so two kernels that start at once share one server.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from .config import Settings, load_settings

STATE_FILE = "server.json"
LOG_FILE = "server.log"
START_TIMEOUT = 120.0


class LocalServerError(RuntimeError):
    """The local server could not be started or reached; the message says why and what to do."""


def state_path(settings: Settings) -> Path:
    return settings.state_dir / STATE_FILE


def log_path(settings: Settings) -> Path:
    return settings.state_dir / LOG_FILE


def read_state(settings: Settings) -> dict | None:
    try:
        state = json.loads(state_path(settings).read_text())
    except (OSError, ValueError):
        return None
    valid = (
        isinstance(state, dict)
        and isinstance(state.get("pid"), int)
        and isinstance(state.get("port"), int)
        and isinstance(state.get("host"), str)
    )
    return state if valid else None


def write_state(path: Path, state: dict) -> None:
    """Written atomically: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(state, indent=2))
    os.replace(tmp, path)


def url_of(state: dict) -> str:
    host = state["host"]
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://{host}:{state['port']}"


def _pid_alive(pid: int) -> bool:
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


def probe(state: dict, timeout: float = 2.0) -> dict | None:
    """GET /health; the answer must come from the same process the state file names."""
    try:
        r = httpx.get(url_of(state) + "/health", timeout=timeout)
        health = r.json()
    except (httpx.HTTPError, ValueError):
        return None
    if (
        r.status_code == 200
        and health.get("server") == "phihelpers"
        and health.get("pid") == state["pid"]
    ):
        return health
    return None


def running_server(settings: Settings | None = None) -> dict | None:
    """The state of a live server for these settings, or None (a stale state file is removed)."""
    settings = settings or load_settings()
    state = read_state(settings)
    if state is None:
        return None
    # A busy server still answers /health from its event loop, but a loaded machine can be
    # slow: give a live process time before calling its state stale (and starting a second).
    if _pid_alive(state["pid"]) and probe(state, timeout=10.0):
        return state
    with contextlib.suppress(FileNotFoundError):
        state_path(settings).unlink()
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
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    with open(settings.state_dir / "server.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _reap(proc: subprocess.Popen) -> None:
    """Wait for the child in the background, so it never lingers as a zombie of this kernel."""
    threading.Thread(target=proc.wait, name="phi-server-reaper", daemon=True).start()


def log_tail(path: Path, lines: int = 15) -> str:
    """The last lines of a server log, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _server_env(settings: Settings, port: int) -> dict[str, str]:
    """The server process reads its settings from the environment: hand it these settings
    (a Settings built from another mapping, or changed in code, would otherwise be ignored)."""
    return {
        **os.environ,
        "PHI_BACKEND": "local",
        "PHI_LOCAL_HOST": settings.local_host,
        "PHI_LOCAL_PORT": str(port),
        "PHI_LOCAL_API_KEY": settings.local_api_key,
        "PHI_LOCAL_MODEL_PATH": settings.local_model_path or "",
        "PHI_LOCAL_N_CTX": str(settings.local_n_ctx),
        "PHI_LOCAL_THREADS": str(settings.local_threads or ""),
        "PHI_STATE_DIR": str(settings.state_dir),
        "PHI_MODELS_DIR": str(settings.models_dir),
    }


def ensure_local_server(settings: Settings | None = None, timeout: float = START_TIMEOUT) -> dict:
    """Return the state of the running local server, starting it in the background if needed."""
    settings = settings or load_settings()
    with _start_lock(settings):
        state = running_server(settings)
        if state:
            return state
        port = settings.local_port
        if not port_free(settings.local_host, port):
            if settings.local_port_explicit:
                raise LocalServerError(
                    f"Port {port} on {settings.local_host} is taken by another program, so the "
                    "local model server cannot start there. Stop that program or set "
                    "PHI_LOCAL_PORT to a free port."
                )
            port = 0  # the default port is busy: let the server pick a free one
        log_file = log_path(settings)
        cmd = [
            sys.executable,
            "-m",
            "phihelpers",
            "serve",
            "--host",
            settings.local_host,
            "--port",
            str(port),
            "--state-dir",
            str(settings.state_dir),
        ]
        with open(log_file, "ab") as log:
            proc = subprocess.Popen(
                cmd,
                env=_server_env(settings, port),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a kernel interrupt (SIGINT) does not reach it
                close_fds=True,
            )
        _reap(proc)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise LocalServerError(
                    f"The local model server exited during start-up (code {proc.returncode}). "
                    f"The end of its log ({log_file}):\n{log_tail(log_file)}"
                )
            state = read_state(settings)
            if state and state["pid"] == proc.pid and probe(state, timeout=1.0):
                return state
            time.sleep(0.1)
        proc.terminate()
        raise LocalServerError(
            f"The local model server did not answer within {timeout:.0f} s. Its log "
            f"({log_file}):\n{log_tail(log_file)}"
        )


def stop_local_server(settings: Settings | None = None, timeout: float = 10.0) -> bool:
    """Stop the server these settings point at. Returns False if none was running."""
    settings = settings or load_settings()
    state = read_state(settings)
    if state is None or not _pid_alive(state["pid"]):
        with contextlib.suppress(FileNotFoundError):
            state_path(settings).unlink()
        return False
    pid = state["pid"]
    if not probe(state):  # the pid was reused by some other process: do not signal it
        with contextlib.suppress(FileNotFoundError):
            state_path(settings).unlink()
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _pid_alive(pid):
        time.sleep(0.05)
    if _pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(FileNotFoundError):
        state_path(settings).unlink()
    return True
