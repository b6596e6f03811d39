"""The server process: bind the socket, load the model, claim the state file, run uvicorn.

`python -m phihelpers serve` calls `serve(settings)`. The order matters: a busy port or a
refused public bind fails before the model loads; the state file is written only once the
server listens, and only if no other live server owns it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path

from ..config import load_settings
from ..state import read_state, remove_state, url_of, write_state
from .settings import ServeSettings

log = logging.getLogger("phihelpers.server")


def _refusal(settings: ServeSettings) -> str | None:
    """Why these settings must not be served, or None."""
    if not settings.is_loopback and not settings.api_key:
        return (
            f"refusing to listen on {settings.host} without an API key: anyone on the network "
            "could use this server. Set PHI_LOCAL_API_KEY to a long random secret (share it with "
            "your room), or bind 127.0.0.1."
        )
    return None


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, before the model loads: a busy port fails fast and says what to do."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SystemExit(
            f"error: cannot listen on {host}:{port}: {exc.strerror}. Another program (perhaps "
            "another local model server: `python -m phihelpers status`) uses that port. Pick "
            "another with --port or PHI_LOCAL_PORT."
        ) from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def claim_state(state_dir, state: dict) -> bool:
    """Write our state file, unless a live server already owns it (a foreground `serve`
    beside the background server must not take the background server's place)."""
    from ..launcher import pid_alive, probe

    current = read_state(state_dir)
    if current and current["pid"] != state["pid"] and pid_alive(current["pid"]) and probe(current):
        log.warning(
            "another server (pid %d, %s) owns the state in %s; this one serves without it",
            current["pid"],
            url_of(current),
            state_dir,
        )
        return False
    write_state(state_dir, state)
    return True


def serve(settings: ServeSettings) -> int:
    """Run the server in this process until SIGINT/SIGTERM. Returns the exit code."""
    # llama.cpp's threads wait passively at their barriers (spinning ones starve each other
    # on a busy small machine: docs/performance.md). OpenMP reads this when llama.cpp loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from .engine import ModelFileError
    from .models import ModelRegistry

    refusal = _refusal(settings)
    if refusal:
        print(f"error: {refusal}", file=sys.stderr)
        return 2
    sock = bind(settings.host, settings.port)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        models = ModelRegistry.from_settings(
            load_settings(), settings.model, settings.n_ctx, settings.threads
        )
        if settings.embedding_model:
            models.embedding_path = Path(settings.embedding_model).expanduser()
        models.embedding_pooling = settings.embedding_pooling
        engine = models.start()  # the default model; pulled ones load when a request names them
    except ModelFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    state = {
        "pid": os.getpid(),
        "host": settings.host,
        "port": sock.getsockname()[1],
        "model": engine.name,
        "model_path": str(engine.path),
        "started": time.time(),
        "key_required": bool(settings.api_key),
    }
    state_dir = settings.state_dir or load_settings().state_dir

    def on_start() -> None:
        claim_state(state_dir, state)
        log.info(
            "serving %s (%d-token context, %d threads, loaded in %.2f s) on %s",
            engine.name, engine.n_ctx, engine.n_threads, engine.load_seconds, url_of(state),
        )  # fmt: skip

    def on_stop() -> None:
        remove_state(state_dir, pid=os.getpid())

    from .app import create_app

    _run_uvicorn(create_app(models, settings, on_start, on_stop), sock, settings.access_log)
    return 0


def _run_uvicorn(app, sock: socket.socket, access_log: bool) -> None:
    import uvicorn

    config = uvicorn.Config(
        app,
        log_level="info",
        access_log=access_log,
        timeout_graceful_shutdown=3,
        # Longer than any Retry-After we send: an SDK coming back after one reuses its pooled
        # connection, which must still be open (uvicorn's default is 5 s).
        timeout_keep_alive=75,
        lifespan="on",
    )

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame) -> None:
            app.state.begin_shutdown()  # streams end and queued requests get 503 at once
            super().handle_exit(sig, frame)

    server = Server(config)

    def stop_serving(_signum, _frame) -> None:
        server.should_exit = True

    # uvicorn handles SIGINT/SIGTERM while it serves, then re-raises the signal to the handler
    # that was there before: with this one, a clean shutdown exits 0 (not -15 or a traceback).
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop_serving)
    asyncio.run(server.serve(sockets=[sock]))
