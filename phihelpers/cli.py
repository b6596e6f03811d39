"""Command line: `python -m phihelpers serve | start | stop | status | doctor | pull | keys`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import ConfigError, load_settings
from .keys import KeysFileError, UsageError
from .state import LocalServerError, url_of

# Each command imports what it needs when it runs: `serve` (the server process) needs neither
# httpx nor the launcher, and its start-up time counts (benchmarks/bench_cold_start.py).


def serve(args: argparse.Namespace) -> int:
    """`serve`: the flags come from ServeSettings (phihelpers/server/settings.py)."""
    from .server.bootstrap import serve as run
    from .server.settings import ServeSettings

    return run(ServeSettings.from_arguments(args), started=getattr(args, "started", None))


def doctor(args: argparse.Namespace) -> int:
    from .doctor import doctor as run

    return run(start=args.start, quiet_check=args.quiet_check)


def start(_args) -> int:
    from .local import ensure_local_server

    state = ensure_local_server()
    print(f"local model server: {url_of(state)} (pid {state['pid']}, model {state.get('model')})")
    return 0


def stop(_args) -> int:
    from .local import stop_local_server

    print("stopped" if stop_local_server() else "no local model server was running")
    return 0


def status(_args) -> int:
    from .local import running_server

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


# -- command line: `python -m phihelpers keys new | add | revoke | list | usage` -----------------


def add_keys_command(sub) -> None:
    """Adds `keys` (attendee keys for a workshop server, phihelpers/keys.py) to the commands."""
    k = sub.add_parser("keys", help="attendee keys for a workshop server, and their usage")
    ks = k.add_subparsers(dest="keys_command", required=True)
    new = ks.add_parser("new", help="write a new keys file: one strong key per attendee")
    new.add_argument("count", nargs="?", type=int, help="how many keys (default: one per name)")
    new.add_argument("--out", required=True, type=Path, help="the CSV file to create (0600)")
    new.add_argument("--names", help="alice,bob,... or a file with one name a line")
    new.add_argument("--force", action="store_true", help="replace an existing file")
    new.set_defaults(func=_keys_new)
    add = ks.add_parser("add", help="add attendees (a running server notices)")
    add.add_argument("file", type=Path)
    add.add_argument("names", nargs="+")
    add.set_defaults(func=_keys_add)
    revoke = ks.add_parser("revoke", help="revoke attendees' keys (a running server notices)")
    revoke.add_argument("file", type=Path)
    revoke.add_argument("names", nargs="+")
    revoke.set_defaults(func=_keys_revoke)
    listing = ks.add_parser("list", help="the attendees in a keys file (keys only with --show)")
    listing.add_argument("file", type=Path)
    listing.set_defaults(func=_keys_list)
    for p in (new, add, listing):
        p.add_argument("--show", action="store_true", help="print the keys too, to hand out")
    usage = ks.add_parser("usage", help="requests, 429s and tokens per attendee, from a server")
    usage.add_argument("--endpoint", help="the server's URL (default: the local server)")
    usage.add_argument("--json", action="store_true", help="the server's JSON, not a table")
    usage.set_defaults(func=_keys_usage)


def _print_attendees(attendees, show: bool) -> None:
    width = max([len("name"), *(len(a.name) for a in attendees)])
    for a in attendees:
        state = f"revoked {a.revoked}" if a.revoked else f"created {a.created}"
        print(f"  {a.name:<{width}}  {a.key if show else state}")


def _keys_new(args) -> int:
    from .keys import check_names, create_keys, default_names, parse_names

    names = check_names(parse_names(args.names)) if args.names else default_names(args.count or 0)
    if args.count is not None and args.count != len(names):
        print(f"error: {args.count} keys asked for, but {len(names)} names.", file=sys.stderr)
        return 2
    attendees = create_keys(args.out, names, force=args.force)
    print(f"wrote {len(attendees)} attendee keys to {args.out} (mode 0600: only you can read it)")
    if args.show:
        _print_attendees(attendees, show=True)
    else:
        print(f"  hand them out with: python -m phihelpers keys list {args.out} --show")
    print(f"  serve them: python -m phihelpers serve --host 0.0.0.0 --keys-file {args.out}")
    return 0


def _keys_add(args) -> int:
    from .keys import add_keys

    attendees = add_keys(args.file, args.names)[-len(args.names) :]
    print(f"added {', '.join(a.name for a in attendees)} to {args.file}")
    _print_attendees(attendees, show=args.show)
    return 0


def _keys_revoke(args) -> int:
    from .keys import revoke_keys

    revoke_keys(args.file, args.names)
    print(
        f"revoked {', '.join(args.names)} in {args.file} "
        "(a running server refuses a revoked key within a second)"
    )
    return 0


def _keys_list(args) -> int:
    from .keys import read_keys

    attendees = read_keys(args.file)
    active = sum(a.active for a in attendees)
    print(f"{args.file}: {len(attendees)} attendees, {active} keys active")
    _print_attendees(attendees, show=args.show)
    return 0


def _admin_key() -> str:
    """PHI_LOCAL_API_KEY from the environment (or .env), whatever PHI_BACKEND says."""
    import os

    try:
        return os.environ.get("PHI_LOCAL_API_KEY") or load_settings().local_api_key
    except ConfigError:
        return ""


def _keys_usage(args) -> int:
    import json

    from .keys import fetch_usage, format_usage
    from .local import running_server

    endpoint = args.endpoint
    if not endpoint:
        state = running_server()
        if state is None:
            print("error: no --endpoint given and no local server is running.", file=sys.stderr)
            return 2
        endpoint = url_of(state)
    report = fetch_usage(endpoint, _admin_key())
    print(json.dumps(report, indent=2) if args.json else format_usage(report))
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
    add_keys_command(sub)  # `keys new | add | revoke | list | usage` (see keys.py)
    return parser


def main(argv: list[str] | None = None, started: float | None = None) -> int:
    """`started`: time.monotonic() when the process began (phihelpers/__main__.py), for the
    start-up line a server logs."""
    args = build_parser().parse_args(argv)
    args.started = started
    try:
        return args.func(args)
    except (ConfigError, LocalServerError, KeysFileError, UsageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
