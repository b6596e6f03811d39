"""Command line: `python -m phihelpers serve | start | stop | status | doctor | pull`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import ConfigError, load_settings
from .local import LocalServerError, ensure_local_server, running_server, stop_local_server, url_of


def serve(args: argparse.Namespace) -> int:
    """`serve`: the flags come from ServeSettings (phihelpers/server/settings.py)."""
    from .server.bootstrap import serve as run
    from .server.settings import ServeSettings

    return run(ServeSettings.from_arguments(args))


def doctor(args: argparse.Namespace) -> int:
    from .doctor import doctor as run

    return run(start=args.start, quiet_check=args.quiet_check)


def start(_args) -> int:
    state = ensure_local_server()
    print(f"local model server: {url_of(state)} (pid {state['pid']}, model {state.get('model')})")
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


# -- command line: `python -m phihelpers pull NAME` ---------------------------------------------


def add_pull_command(sub) -> None:
    """Adds `pull` to the `python -m phihelpers` subcommands."""
    p = sub.add_parser("pull", help="download a real Phi model (GGUF) for the local server")
    p.add_argument("name", nargs="?", help="catalog name, e.g. phi-4-mini (see --list)")
    p.add_argument("--list", action="store_true", help="list the models you can pull")
    p.add_argument("--models-dir", help="where models go (default PHI_MODELS_DIR)")
    p.add_argument(
        "--allow-unverified",
        action="store_true",
        help="accept a file no published SHA-256 vouches for (not recommended)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_pull_command)


def _pull_command(args) -> int:
    from .catalog import UnknownModelError, entries, is_downloaded
    from .pull import PullError, pull

    settings = load_settings()
    models_dir = Path(args.models_dir).expanduser() if args.models_dir else settings.models_dir
    if args.list or not args.name:
        print(f"Phi models you can pull into {models_dir}:")
        for e in entries():
            if e.pullable:
                here = "downloaded" if is_downloaded(e, models_dir) else "-"
                print(
                    f"  {e.name:<16} {e.model:<26} {e.gguf_quant:<7} "
                    f"{e.gguf_size_bytes / 1e9:5.1f} GB  {here}"
                )
        print("Pull one with: python -m phihelpers pull phi-4-mini")
        return 0 if args.list else 2
    try:
        result = pull(
            args.name,
            models_dir,
            settings.hf_endpoint,
            progress=not args.quiet,
            allow_unverified=args.allow_unverified,
        )
    except (PullError, UnknownModelError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: the partial download is kept; run the same command to resume.")
        return 130
    state = "already downloaded" if result.already_present else "downloaded and verified"
    print(f"{result.name}: {state}: {result.path} ({result.size / 1e9:.2f} GB)")
    print(f"  SHA-256 {result.sha256} ({result.sha256_source})")
    print(
        f"Serve it: PHI_MODEL={result.name} python -m phihelpers start  "
        f'(or send model="{result.name}" to a running local server)'
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .server.settings import add_arguments

    parser = argparse.ArgumentParser(prog="python -m phihelpers", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the local model server in the foreground")
    add_arguments(s)
    s.set_defaults(func=serve)

    d = sub.add_parser("doctor", help="show the backend, endpoint, model, key status and /info")
    d.add_argument(
        "--start", action="store_true", help="start the local server if it is not running"
    )
    d.add_argument("--quiet-check", action="store_true", help=argparse.SUPPRESS)
    d.set_defaults(func=doctor)

    for name, func, text in (
        ("start", start, "start the local server in the background"),
        ("stop", stop, "stop the background local server"),
        ("status", status, "is the local server running?"),
    ):
        sub.add_parser(name, help=text).set_defaults(func=func)
    add_pull_command(sub)  # `pull NAME`: download a real Phi GGUF (see pull.py)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, LocalServerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
