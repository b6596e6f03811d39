"""The state directory of a local model server: its state file, log and start lock.

One server owns one state directory. It writes `server.json` (pid, host, port, model and a
random `secret`) once it listens and removes it when it stops; clients (phihelpers.local, the
lessons' extra server, the tests) read it to find the server. The secret is how a client knows
it reached the server that wrote the file, not a process that took its port or reuses its pid:

    client:  GET /health   X-Phihelpers-Challenge: <fresh nonce>       (never a key)
    server:  {"server": "phihelpers", "pid": ..., "proof": HMAC-SHA256(secret, nonce)}

The secret never leaves the file. So only this user may read or write it: the directory is
0700, its files 0600, and a directory or state file another user owns or can write is refused
with a LocalServerError (whoever can write it could plant a server of their own).

This module is the only one that knows the file names, the file's shape and the challenge.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import stat
import tempfile
from pathlib import Path

STATE_FILE = "server.json"
LOG_FILE = "server.log"
LOCK_FILE = "server.lock"
CHALLENGE_HEADER = "X-Phihelpers-Challenge"
_NONCE = re.compile(r"[0-9A-Za-z_-]{16,128}")
_OTHER_USERS_WRITE = stat.S_IWGRP | stat.S_IWOTH


class LocalServerError(RuntimeError):
    """The local server could not be started or reached; the message says why and what to do."""


class Secret(str):
    """A state file's secret: a string whose repr never shows it (a notebook that displays a
    state dict, a log line, a traceback)."""

    def __repr__(self) -> str:
        return "'<secret>'"


def state_file(state_dir: Path) -> Path:
    return Path(state_dir) / STATE_FILE


def log_file(state_dir: Path) -> Path:
    return Path(state_dir) / LOG_FILE


def lock_file(state_dir: Path) -> Path:
    return Path(state_dir) / LOCK_FILE


# -- the challenge ------------------------------------------------------------------------


def new_secret() -> Secret:
    return Secret(secrets.token_hex(32))


def new_nonce() -> str:
    return secrets.token_urlsafe(24)


def challenge_answer(secret: str, nonce: str) -> str | None:
    """HMAC-SHA256(secret, nonce) in hex, or None for a nonce that is not one of ours."""
    if not secret or not _NONCE.fullmatch(nonce):
        return None
    return hmac.new(secret.encode(), nonce.encode(), hashlib.sha256).hexdigest()


def answers_challenge(state: dict, nonce: str, proof: object) -> bool:
    """Whether `proof` is what the holder of this state's secret answers to `nonce`."""
    secret = state.get("secret")
    expected = challenge_answer(secret, nonce) if isinstance(secret, str) else None
    if expected is None or not isinstance(proof, str):
        return False
    return hmac.compare_digest(expected.encode(), proof.encode())


# -- a directory and files private to this user -------------------------------------------


def _check_mine(path: Path, st: os.stat_result, what: str, fix: str) -> None:
    """Refuse what another user owns or can write (mode bits and owner, not access errors:
    root passes every access check)."""
    if st.st_uid != os.geteuid():
        raise LocalServerError(
            f"The {what} {path} belongs to another user (uid {st.st_uid}), so a server found "
            f"through it cannot be trusted: {fix}, or set PHI_STATE_DIR to a directory of your own."
        )
    if st.st_mode & _OTHER_USERS_WRITE:
        raise LocalServerError(
            f"The {what} {path} can be written by other users (mode "
            f"{stat.S_IMODE(st.st_mode):04o}), so a server found through it cannot be trusted: "
            f"{fix}, or set PHI_STATE_DIR to a directory of your own."
        )


def _check_dir(state_dir: Path, st: os.stat_result) -> None:
    if not stat.S_ISDIR(st.st_mode):
        raise LocalServerError(
            f"The state directory {state_dir} is not a directory: set PHI_STATE_DIR to a "
            "directory (it is created if missing)."
        )
    _check_mine(state_dir, st, "state directory", f"run `chmod 700 {state_dir}`")


def private_dir(state_dir: Path) -> Path:
    """The state directory, created 0700 if missing and tightened to 0700 if this user owns
    it; LocalServerError if it cannot be created or another user owns or can write it."""
    state_dir = Path(state_dir)
    try:
        with contextlib.suppress(FileExistsError):  # a file in the way: said below
            state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = state_dir.stat()
    except OSError as exc:
        raise LocalServerError(
            f"The state directory {state_dir} cannot be created ({exc.strerror}): set "
            "PHI_STATE_DIR to a directory you can write."
        ) from None
    _check_dir(state_dir, st)
    if stat.S_IMODE(st.st_mode) != 0o700:
        with contextlib.suppress(OSError):  # ours, so only a read-only file system says no
            state_dir.chmod(0o700)
    return state_dir


def check_state_file(state_dir: Path) -> None:
    """LocalServerError if the state file exists but is not a regular file of this user's
    that only this user can write (a missing one is fine)."""
    path = state_file(state_dir)
    try:
        st = path.stat()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise LocalServerError(
            f"The state file {path} cannot be read ({exc.strerror}): set PHI_STATE_DIR to a "
            "directory of your own."
        ) from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise LocalServerError(
            f"The state file {path} is {kind}: remove it (a server writes a new one), or set "
            "PHI_STATE_DIR to another directory."
        )
    _check_mine(path, st, "state file", "remove it (a server writes a new one)")


def open_private(path: Path):
    """`path` opened for appending, created 0600 (and tightened to 0600): the log, the lock."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise LocalServerError(
            f"{path} cannot be opened ({exc.strerror}): remove it, or set PHI_STATE_DIR to "
            "another directory."
        ) from None
    try:
        _check_mine(path, os.fstat(fd), "file", "remove it")
        os.fchmod(fd, 0o600)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "ab")


# -- the state file -----------------------------------------------------------------------


def read_state(state_dir: Path) -> dict | None:
    """The state a server wrote, or None if there is none or it is not a valid state.

    LocalServerError if the directory or the file is not this user's alone (see above)."""
    state_dir = Path(state_dir)
    try:
        st = state_dir.stat()
    except OSError:
        return None  # no state directory (yet): no server
    _check_dir(state_dir, st)
    check_state_file(state_dir)
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
    if valid and isinstance(state.get("secret"), str):
        state["secret"] = Secret(state["secret"])
    return state if valid else None


def write_state(state_dir: Path, state: dict) -> None:
    """Written atomically (a reader never sees half a file), 0600 in a 0700 directory. A
    LocalServerError says why it could not be; no temporary file is left behind."""
    path = state_file(private_dir(state_dir))
    check_state_file(state_dir)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{STATE_FILE}.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:  # mkstemp: 0600, this user's
            f.write(json.dumps(state, indent=2))
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(exc, OSError):
            raise LocalServerError(
                f"The state file {path} cannot be written ({exc.strerror}): set PHI_STATE_DIR "
                "to a directory you can write."
            ) from None
        raise


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
