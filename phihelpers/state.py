"""The state directory of a local model server: its state file, log and start lock.

One server owns one state directory. It writes `server.json` (pid, host, port, model) once it
listens and removes it when it stops; clients (phihelpers.local, the lessons' extra server,
the tests) read it to find the server. This module is the only one that knows the file names
and the file's shape.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

STATE_FILE = "server.json"
LOG_FILE = "server.log"
LOCK_FILE = "server.lock"


def state_file(state_dir: Path) -> Path:
    return Path(state_dir) / STATE_FILE


def log_file(state_dir: Path) -> Path:
    return Path(state_dir) / LOG_FILE


def lock_file(state_dir: Path) -> Path:
    return Path(state_dir) / LOCK_FILE


def read_state(state_dir: Path) -> dict | None:
    """The state a server wrote, or None if there is none or it is not a valid state."""
    try:
        state = json.loads(state_file(state_dir).read_text())
    except (OSError, ValueError):
        return None
    valid = (
        isinstance(state, dict)
        and isinstance(state.get("pid"), int)
        and isinstance(state.get("port"), int)
        and isinstance(state.get("host"), str)
    )
    return state if valid else None


def write_state(state_dir: Path, state: dict) -> None:
    """Written atomically: a reader never sees half a file."""
    path = state_file(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(state, indent=2))
    os.replace(tmp, path)


def remove_state(state_dir: Path, pid: int | None = None) -> None:
    """Remove the state file; with `pid`, only if that process wrote it."""
    path = state_file(state_dir)
    with contextlib.suppress(OSError, ValueError):
        if pid is not None and json.loads(path.read_text()).get("pid") != pid:
            return
        path.unlink()


def url_of(state: dict) -> str:
    host = state["host"]
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{state['port']}"
