"""A throwaway second local model server, for lessons that need special server settings.

Lesson 07 wants a server with a rate limit, a key and a content filter, without touching the
shared server every other notebook uses. This starts `python -m phihelpers serve` on a free
port with its own temporary state directory, and stops it (and removes the directory) again:

    with start_extra_server(rate_limit_rpm=3, api_key=key) as server:
        server.endpoint        # http://127.0.0.1:<port>

or, across notebook cells, `server = start_extra_server(...)` ... `server.stop()`. The keyword
arguments are the `serve` options (phihelpers.server.settings.ServeSettings), checked before
anything starts.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

from .launcher import LocalServerError, ServerHandle, launch
from .server.settings import ServeSettings, ServeSettingsError


class ExtraServer:
    """One extra server process. `endpoint` is what ChatCompletionsClient(endpoint=...) takes."""

    def __init__(self, handle: ServerHandle):
        self.handle = handle
        self.command = handle.command  # the key, if any, is in its env, not here
        self.state_dir = handle.state_dir
        self.state = handle.state
        self.endpoint = handle.endpoint

    @property
    def proc(self):
        return self.handle.proc

    @property
    def log_path(self) -> Path:
        return self.handle.log_path

    @property
    def running(self) -> bool:
        return self.handle.running

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the process (SIGTERM, then SIGKILL) and remove its state directory."""
        self.handle.stop(timeout)
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
    api_key: str | None = None, timeout: float = 120.0, **options
) -> ExtraServer:
    """Start `python -m phihelpers serve --port 0 ...` on 127.0.0.1 and wait for it.

    `options` are ServeSettings fields (max_queue=2, rate_limit_rpm=3, ...). `api_key` becomes
    the server's PHI_LOCAL_API_KEY (None: the server needs no key, whatever the caller's
    environment says). Raises LocalServerError with the reason if it won't start.
    """
    state_dir = Path(tempfile.mkdtemp(prefix="phihelpers-extra-"))
    try:
        settings = ServeSettings.build(
            **{"host": "127.0.0.1", "port": 0, **options},
            state_dir=state_dir,
            api_key=api_key or "",
        )
        server = ExtraServer(launch(settings, timeout=timeout))
    except (ServeSettingsError, LocalServerError) as exc:
        shutil.rmtree(state_dir, ignore_errors=True)
        raise LocalServerError(f"The extra server was not started: {exc}") from None
    atexit.register(server.stop)  # a forgotten stop() still ends it with the kernel
    return server
