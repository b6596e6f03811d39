"""Command line: `python -m phihelpers serve | doctor | start | stop | status`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path

from .config import NO_KEY, ConfigError, load_settings
from .local import (
    LocalServerError,
    ensure_local_server,
    running_server,
    stop_local_server,
    url_of,
    write_state,
)

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _bind(host: str, port: int) -> socket.socket:
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


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .server.app import ServerOptions, create_app
    from .server.engine import ModelFileError
    from .server.limits import LimitSettings
    from .server.models import ModelRegistry

    settings = load_settings()
    host = args.host or settings.local_host
    port = settings.local_port if args.port is None else args.port
    api_key = settings.local_api_key
    if host not in LOOPBACK and not api_key:
        print(
            f"error: refusing to listen on {host} without an API key: anyone on the network "
            "could use this server. Set PHI_LOCAL_API_KEY to a long random secret (share it with "
            "your room), or bind 127.0.0.1.",
            file=sys.stderr,
        )
        return 2
    if args.rate_limit_window <= 0:
        print("error: --rate-limit-window must be a positive number of seconds.", file=sys.stderr)
        return 2
    if args.default_max_tokens < 1:
        print("error: --default-max-tokens must be at least 1.", file=sys.stderr)
        return 2
    sock = _bind(host, port)  # before loading the model: a busy port fails fast
    port = sock.getsockname()[1]
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        models = ModelRegistry.from_settings(settings, args.model, args.n_ctx, args.threads)
        engine = models.start()  # the default model; pulled ones load when a request names them
    except ModelFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    options = ServerOptions(
        api_key=api_key,
        limits=LimitSettings(
            max_queue=args.max_queue,
            requests_per_minute=args.rate_limit_rpm,
            concurrent_per_key=args.rate_limit_concurrency,
            window_seconds=args.rate_limit_window,
        ),
        log_prompts=args.log_prompts,
        cors_origins=[o for o in (args.cors_origin or []) if o],
        content_filter_phrase=args.content_filter_phrase or "",
        default_max_tokens=args.default_max_tokens,
    )
    state_file = Path(args.state_dir or settings.state_dir) / "server.json"
    state = {
        "pid": os.getpid(),
        "host": host,
        "port": port,
        "model": engine.name,
        "model_path": str(engine.path),
        "started": time.time(),
        "key_required": bool(api_key),
    }

    def on_start() -> None:
        write_state(state_file, state)
        logging.getLogger("phihelpers.server").info(
            "serving %s (%d-token context, %d threads, loaded in %.2f s) on %s",
            engine.name,
            engine.n_ctx,
            engine.n_threads,
            engine.load_seconds,
            url_of(state),
        )

    def on_stop() -> None:
        with contextlib.suppress(OSError, ValueError):
            if json.loads(state_file.read_text()).get("pid") == os.getpid():
                state_file.unlink()

    app = create_app(engine, options, on_start=on_start, on_stop=on_stop, models=models)
    config = uvicorn.Config(
        app,
        log_level="info",
        access_log=args.access_log,
        timeout_graceful_shutdown=3,
        # Keep idle connections longer than any Retry-After we send (rate windows default to
        # 60 s): with uvicorn's 5 s default, an SDK that waited a 5 s Retry-After reused a
        # pooled connection just as the server closed it and failed with "connection reset".
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
    return 0


def doctor(args: argparse.Namespace) -> int:
    """Print what the lessons would use, and whether it answers. Never prints a key."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"configuration problem:\n{exc}")
        return 1
    if args.quiet_check:  # used by setup: only check that the package and model are in place
        if settings.backend == "local":
            from .server.engine import ModelFileError, check_model_file, default_model_path

            try:
                path = (
                    Path(settings.local_model_path)
                    if settings.local_model_path
                    else default_model_path()
                )
                check_model_file(path)
            except ModelFileError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
            print(f"local model: {path}")
        return 0
    print(f"backend:   {settings.backend}")
    key = settings.api_key
    try:
        if settings.backend == "local":
            state = running_server(settings)
            if state is None and args.start:
                state = ensure_local_server(settings)
            if state is None:
                print(
                    "server:    not running (it starts on first use; `python -m phihelpers start`)"
                )
                return 0
            endpoint = url_of(state)
            print(f"endpoint:  {endpoint}   (pid {state['pid']}, state in {settings.state_dir})")
        else:
            endpoint = settings.endpoint
            print(f"endpoint:  {endpoint}")
    except LocalServerError as exc:
        print(f"server:    failed to start:\n{exc}")
        return 1
    print(f"model:     {settings.model or '(the server default)'}")
    print(f"key:       {'set' if key and key != NO_KEY else 'not set'}")
    import httpx

    headers = {"api-key": key, "Authorization": f"Bearer {key}"} if key else {}
    try:
        r = httpx.get(
            endpoint.rstrip("/") + "/info",
            params={"api-version": "2024-05-01-preview"},
            headers=headers,
            timeout=10,
        )
    except httpx.HTTPError as exc:
        print(f"answers:   no ({type(exc).__name__}: {exc})")
        return 1
    print(f"answers:   HTTP {r.status_code}")
    if r.status_code == 200:
        for k, v in r.json().items():
            print(f"  {k}: {v}")
    else:
        print(f"  {r.text[:300]}")
    return 0 if r.status_code == 200 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m phihelpers", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the local model server in the foreground")
    s.add_argument("--host", help="address to bind (default PHI_LOCAL_HOST or 127.0.0.1)")
    s.add_argument("--port", type=int, help="port (default PHI_LOCAL_PORT or 8765; 0 = any free)")
    s.add_argument(
        "--model", help="GGUF file or pulled catalog name (default PHI_LOCAL_MODEL_PATH or SmolLM2)"
    )
    s.add_argument("--n-ctx", type=int, help="context window in tokens (default PHI_LOCAL_N_CTX)")
    s.add_argument(
        "--threads", type=int, help="CPU threads for generating (default: all cores but one)"
    )
    s.add_argument("--state-dir", help="where server.json is written (default PHI_STATE_DIR)")
    s.add_argument("--max-queue", type=int, default=8, help="requests that may wait (then 429)")
    s.add_argument("--rate-limit-rpm", type=int, default=0, help="requests per minute per key")
    s.add_argument(
        "--rate-limit-window",
        type=float,
        default=60.0,
        help="seconds the --rate-limit-rpm count covers (default 60; shorter for lessons)",
    )
    s.add_argument(
        "--rate-limit-concurrency", type=int, default=0, help="concurrent requests per key"
    )
    s.add_argument("--log-prompts", action="store_true", help="log each prompt (off by default)")
    s.add_argument("--access-log", action="store_true", help="log every request line")
    s.add_argument("--cors-origin", action="append", help="allow this browser origin (repeatable)")
    s.add_argument(
        "--content-filter-phrase", help="refuse prompts with this phrase like Azure's filter"
    )
    s.add_argument(
        "--default-max-tokens",
        type=int,
        default=1024,
        help="answer length cap for requests that set no max_tokens (default 1024)",
    )
    s.set_defaults(func=serve)

    d = sub.add_parser("doctor", help="show the backend, endpoint, model, key status and /info")
    d.add_argument(
        "--start", action="store_true", help="start the local server if it is not running"
    )
    d.add_argument("--quiet-check", action="store_true", help=argparse.SUPPRESS)
    d.set_defaults(func=doctor)

    def start(_args) -> int:
        state = ensure_local_server()
        print(
            f"local model server: {url_of(state)} (pid {state['pid']}, model {state.get('model')})"
        )
        return 0

    def stop(_args) -> int:
        print("stopped" if stop_local_server() else "no local model server was running")
        return 0

    def status(_args) -> int:
        state = running_server()
        if state is None:
            print("no local model server is running")
            return 1
        print(f"running: {url_of(state)} (pid {state['pid']}, model {state.get('model')})")
        return 0

    sub.add_parser("start", help="start the local server in the background").set_defaults(
        func=start
    )
    sub.add_parser("stop", help="stop the background local server").set_defaults(func=stop)
    sub.add_parser("status", help="is the local server running?").set_defaults(func=status)
    from .pull import add_pull_command

    add_pull_command(sub)  # `pull NAME`: download a real Phi GGUF (see pull.py)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, LocalServerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
