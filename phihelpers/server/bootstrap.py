"""The server process: bind the socket, load the model, claim the state file, run uvicorn.

`python -m phihelpers serve` calls `serve(settings)`. The order matters: a refused public bind,
a state directory that cannot be used or a busy port fails before the model loads; the state
file (with a fresh secret, which /health proves it holds: phihelpers.state) is written only once
the server listens, and only if no other live server owns it.

A start is fast when the model loads on a thread of its own while this one imports the web
stack (FastAPI, pydantic, uvicorn: most of a start): llama.cpp reads the file without holding
the GIL. The log says where a start spent its time (`Timeline`; benchmarks/bench_cold_start.py
reads that line).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ..config import load_settings
from ..state import (
    LocalServerError,
    check_state_file,
    new_secret,
    private_dir,
    read_state,
    remove_state,
    url_of,
    write_state,
)
from .settings import ServeSettings

log = logging.getLogger("phihelpers.server")


class Timeline:
    """When each step of a start happened (time.monotonic(), one clock for every process of
    the machine), for one line in the log."""

    def __init__(self, started: float | None = None):
        self.started = started if started is not None else time.monotonic()
        self.marks: list[tuple[str, float, float | None]] = []

    def mark(self, name: str, since: float | None = None) -> None:
        """`name` happened now (a step that began at `since`, if given)."""
        self.marks.append((name, time.monotonic(), since))  # (from any thread)

    def line(self) -> str:
        def since_start(t: float) -> str:
            return f"{t - self.started:.3f}"

        steps = ", ".join(
            f"{name} {since_start(since)}-{since_start(t)}" if since else f"{name} {since_start(t)}"
            for name, t, since in sorted(self.marks, key=lambda m: m[1])
        )
        return (
            f"start-up: {steps} (seconds since the process started, monotonic {self.started:.6f})"
        )


def in_background(func: Callable, name: str) -> Callable:
    """Run `func()` on a thread now; the function returned waits for it and returns its result
    (or raises its exception)."""
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["value"] = func()
        except BaseException as exc:  # handed to whoever waits
            outcome["error"] = exc

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()

    def result():
        thread.join()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]

    return result


def _refusal(settings: ServeSettings) -> str | None:
    """Why these settings must not be served, or None.

    Off loopback every request must need a strong key: PHI_LOCAL_API_KEY (the teacher's; at
    least 16 characters, 10 of them different) or the attendee keys of --keys-file, which on its
    own opens a public bind too (its keys are checked as strictly). Never says what a key is.
    """
    import hmac

    from ..keys import MAKE_A_STRONG_KEY, KeysFileError, key_weakness, read_keys

    key, host = settings.api_key, settings.host
    if settings.keys_file:
        try:
            attendees = read_keys(settings.keys_file)
        except KeysFileError as exc:
            return f"cannot use the --keys-file: {exc}"
        if key and any(hmac.compare_digest(a.key.encode(), key.encode()) for a in attendees):
            return (
                f"PHI_LOCAL_API_KEY is also an attendee's key in {settings.keys_file}: the "
                "teacher's key must be one that no attendee has."
            )
    if settings.is_loopback:
        return None
    if not key and not settings.keys_file:
        return (
            f"refusing to listen on {host} without an API key: anyone on the network could use "
            "this server. Set PHI_LOCAL_API_KEY to a long random secret (share it with your "
            "room), or give each attendee a key with --keys-file (python -m phihelpers keys "
            "new), or bind 127.0.0.1."
        )
    if key and (weak := key_weakness(key)):
        return (
            f"refusing to listen on {host} with a weak PHI_LOCAL_API_KEY ({weak}): anyone on "
            f"the network could guess it. Make a strong one with: {MAKE_A_STRONG_KEY}"
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
    current = read_state(state_dir)  # LocalServerError: see phihelpers.state
    if current and current["pid"] != state["pid"]:
        from ..launcher import is_live  # (httpx: imported only when there is one to ask)

        if is_live(current):
            log.warning(
                "another server (pid %d, %s) owns the state in %s; this one serves without it",
                current["pid"],
                url_of(current),
                state_dir,
            )
            return False
    write_state(state_dir, state)
    return True


def _state_dir_refusal(state_dir) -> str | None:
    """Why this state directory cannot hold our state (see phihelpers.state), or None."""
    try:
        private_dir(state_dir)
        check_state_file(state_dir)
    except LocalServerError as exc:
        return str(exc)
    return None


def serve(settings: ServeSettings, started: float | None = None) -> int:
    """Run the server in this process until SIGINT/SIGTERM. Returns the exit code.

    `started`: time.monotonic() when the process began (phihelpers/__main__.py), for the log's
    start-up line (else: when this was called)."""
    timeline = Timeline(started)
    timeline.mark("serve")  # Python started and the command line is read
    # llama.cpp's threads wait passively at their barriers (spinning ones starve each other
    # on a busy small machine: docs/performance.md). OpenMP reads this when llama.cpp loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from .engine import ModelFileError, default_parallel
    from .models import ModelRegistry

    env = load_settings()  # PHI_MODEL, PHI_MODELS_DIR, and the state dir if none is given
    state_dir = settings.state_dir or env.state_dir
    refusal = _refusal(settings) or _state_dir_refusal(state_dir)
    if refusal:
        print(f"error: {refusal}", file=sys.stderr)
        return 2
    sock = bind(settings.host, settings.port)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        models = ModelRegistry.from_settings(env, settings.model, settings.n_ctx, settings.threads)
        if settings.embedding_model:
            models.embedding_path = Path(settings.embedding_model).expanduser()
        models.embedding_pooling = settings.embedding_pooling
        models.parallel = settings.parallel or default_parallel()
        models.kv_tokens = settings.kv_cache_tokens
    except ModelFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    bindings = threading.Event()

    def load():  # the default model; pulled ones load when a request names them
        begun = time.monotonic()
        try:
            # llama-cpp-python's own import (~0.1 s of Python: numpy, ctypes) goes first and
            # alone: beside the imports below it would get half the GIL and start the load late.
            # (engine.py is still the only module that uses it.)
            importlib.import_module("llama_cpp")
            timeline.mark("llama_cpp", since=begun)
        finally:
            bindings.set()
        begun = time.monotonic()
        engine = models.start()
        timeline.mark("model", since=begun)
        return engine

    loaded = in_background(load, "phi-model-load")
    bindings.wait()
    begun = time.monotonic()
    try:  # meanwhile, on this thread: what serving needs besides the model
        from .app import create_app

        _import_uvicorn()
        timeline.mark("imports", since=begun)
    except BaseException:
        # While llama.cpp loads, stdout and stderr lead to /dev/null: report once it is done.
        with contextlib.suppress(BaseException):
            loaded()
        raise
    try:
        engine = loaded()
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
        "key_required": bool(settings.api_key or settings.keys_file),
        "secret": new_secret(),  # in the 0600 state file and this process only
    }

    def on_start() -> None:
        try:
            claim_state(state_dir, state)
        except LocalServerError as exc:  # checked before the model loaded: changed since
            log.error("%s No client could find this server, so it stops.", exc)
            os._exit(2)  # one line in the log, not uvicorn's traceback of a failed startup
        log.info(
            "serving %s (%d-token context, %d threads, loaded in %.2f s) on %s",
            engine.name, engine.n_ctx, engine.n_threads, engine.load_seconds, url_of(state),
        )  # fmt: skip
        timeline.mark("listening")  # uvicorn accepts once this returns (the socket listens)
        log.info("%s", timeline.line())

    def on_stop() -> None:
        remove_state(state_dir, pid=os.getpid())

    app = create_app(models, settings, on_start, on_stop)
    app.state.state_secret = state["secret"]  # what /health proves it holds
    timeline.mark("app")
    _run_uvicorn(app, sock, settings)
    return 0


def _import_uvicorn() -> None:
    import uvicorn  # noqa: F401 - imported beside the model load (serve)

    from .connections import guarded_protocol  # noqa: F401


def _run_uvicorn(app, sock: socket.socket, settings: ServeSettings) -> None:
    import asyncio

    import uvicorn

    from .connections import guarded_protocol

    config = uvicorn.Config(
        app,
        http=guarded_protocol(settings.request_timeout, settings.max_connections),
        log_level="info",
        access_log=settings.access_log,
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
