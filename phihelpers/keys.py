"""Attendee keys for a workshop server: one CSV file, made, changed and read here.

    python -m phihelpers keys new 30 --out room-keys.csv     # or --names alice,bob,...
    python -m phihelpers serve --host 0.0.0.0 --keys-file room-keys.csv
    python -m phihelpers keys revoke room-keys.csv alice     # the server notices, no restart

The file (always mode 0600, written whole and swapped in, so a reader never sees half of it):

    name,key,created,revoked
    alice,phi-...,2026-12-01T09:00:00Z,
    bob,phi-...,2026-12-01T09:00:00Z,2026-12-01T10:12:03Z

A name is what the server's logs, limits and usage table know an attendee by; the key itself is
never printed (except by `--show`, on the teacher's own terminal) and never in an error message.
The server holds the file in a `Keyring`, which re-reads it when it changes. No FastAPI here.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import hmac
import io
import logging
import os
import re
import secrets
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger("phihelpers.server")

FIELDS = ("name", "key", "created", "revoked")
KEY_PREFIX = "phi-"
MIN_KEY_LENGTH = 16
MIN_DISTINCT_CHARACTERS = 10
MAKE_A_STRONG_KEY = 'python -c "import secrets; print(secrets.token_urlsafe(24))"'
ADMIN = "admin"  # the identity of the teacher's key (PHI_LOCAL_API_KEY); no attendee's name
NAME_RULE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,39}")


class KeysFileError(ValueError):
    """The keys file (or a name for it) is not usable; the message never contains a key."""


@dataclass(frozen=True)
class Attendee:
    name: str
    key: str = field(repr=False)
    created: str = ""
    revoked: str = ""  # when it was revoked (UTC, ISO 8601); empty: the key works

    @property
    def active(self) -> bool:
        return not self.revoked


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_key() -> str:
    """A strong random key: 'phi-' and 32 URL-safe characters (192 bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(24)


def key_weakness(key: str) -> str | None:
    """Why a key is too weak to guard a server on a network, or None if it is strong enough."""
    if len(key) < MIN_KEY_LENGTH:
        return f"it is shorter than {MIN_KEY_LENGTH} characters"
    if len(set(key)) < MIN_DISTINCT_CHARACTERS:
        return f"it has fewer than {MIN_DISTINCT_CHARACTERS} different characters"
    return None


# -- names --------------------------------------------------------------------------------------
def default_names(count: int) -> list[str]:
    width = max(2, len(str(count)))
    return [f"attendee-{i:0{width}d}" for i in range(1, count + 1)]


def parse_names(value: str) -> list[str]:
    """`--names`: a comma-separated list, or the path of a text file with one name a line
    (blank lines and lines starting with # are skipped)."""
    path = Path(value).expanduser()
    if path.is_file():
        lines = path.read_text(encoding="utf-8").splitlines()
        return [s for line in lines if (s := line.strip()) and not s.startswith("#")]
    return [s for part in value.split(",") if (s := part.strip())]


def check_names(names: Iterable[str], taken: Iterable[str] = ()) -> list[str]:
    """The names, checked: each 1-40 letters, digits or . _ @ - (starting with a letter or
    digit), unique (ignoring case), not 'admin', none of `taken`."""
    seen = {t.lower() for t in taken}
    names = list(names)
    for name in names:
        if not NAME_RULE.fullmatch(name):
            raise KeysFileError(
                f"{name!r} is not a usable name: use 1-40 letters, digits or . _ @ - "
                "(starting with a letter or digit)."
            )
        if name.lower() == ADMIN:
            raise KeysFileError("'admin' is the teacher's key (PHI_LOCAL_API_KEY): pick another.")
        if name.lower() in seen:
            raise KeysFileError(f"the name {name!r} is there twice: names must be unique.")
        seen.add(name.lower())
    return names


# -- the file -----------------------------------------------------------------------------------
def _csv_text(attendees: Iterable[Attendee]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(FIELDS)
    for a in attendees:
        writer.writerow([a.name, a.key, a.created, a.revoked])
    return out.getvalue()


def write_keys(path: Path, attendees: list[Attendee], *, replace_file: bool = True) -> None:
    """Write the whole file, mode 0600. `replace_file=False`: fail if it exists (O_EXCL);
    otherwise a temporary file beside it is swapped in, so readers see old or new, never half."""
    path = Path(path)
    text = _csv_text(attendees)
    if not replace_file:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        return
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def create_keys(path: Path, names: list[str], *, force: bool = False) -> list[Attendee]:
    """A new keys file with a fresh key for each name. Refuses to overwrite unless `force`."""
    path = Path(path)
    names = check_names(names)
    if not names:
        raise KeysFileError("no names: ask for at least one key.")
    if path.is_dir():
        raise KeysFileError(f"{path} is a directory; give the file to write with --out.")
    created = now()
    attendees = [Attendee(n, new_key(), created) for n in names]
    try:
        write_keys(path, attendees, replace_file=force)
    except FileExistsError:
        raise KeysFileError(
            f"{path} already exists: its keys may be handed out already. Pick another file, or "
            "add --force to replace it (every key in it stops working)."
        ) from None
    except OSError as exc:
        raise KeysFileError(f"cannot write {path}: {exc.strerror}.") from None
    return attendees


def read_keys(path: Path) -> list[Attendee]:
    """The attendees in a keys file, checked: known columns, usable unique names, strong
    unique keys. KeysFileError says what is wrong (by row and name, never the key)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # a spreadsheet may add a BOM
    except FileNotFoundError:
        raise KeysFileError(
            f"{path} does not exist. Make it with: python -m phihelpers keys new 30 --out {path}"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise KeysFileError(f"cannot read {path}: {exc}.") from None
    rows = csv.DictReader(io.StringIO(text))
    if not rows.fieldnames or not {"name", "key"} <= set(rows.fieldnames):
        raise KeysFileError(
            f"{path} is not a keys file: its first line must be {','.join(FIELDS)}."
        )
    attendees, digests = [], set()
    for number, row in enumerate(rows, start=2):
        a = Attendee(*((row.get(f) or "").strip() for f in FIELDS))
        where = f"{path.name}, line {number} ({a.name or 'no name'})"
        if weak := key_weakness(a.key):
            raise KeysFileError(f"{where}: the key is too weak: {weak}.")
        digest = hashlib.sha256(a.key.encode()).digest()
        if digest in digests:
            raise KeysFileError(f"{where}: the same key is given to someone else too.")
        digests.add(digest)
        attendees.append(a)
    try:
        check_names(a.name for a in attendees)
    except KeysFileError as exc:
        raise KeysFileError(f"{path.name}: {exc}") from None
    return attendees


def _change(path: Path, change) -> list[Attendee]:
    attendees = change(read_keys(path))
    try:
        write_keys(Path(path), attendees)
    except OSError as exc:
        raise KeysFileError(f"cannot write {path}: {exc.strerror}.") from None
    return attendees


def revoke_keys(path: Path, names: list[str]) -> list[Attendee]:
    """Mark these attendees' keys revoked (a running server notices within about a second)."""

    def change(attendees: list[Attendee]) -> list[Attendee]:
        known = {a.name.lower() for a in attendees}
        unknown = [n for n in names if n.lower() not in known]
        if unknown:
            listed = ", ".join(a.name for a in attendees) or "nobody"
            raise KeysFileError(f"no attendee {', '.join(unknown)} in {path} (it has: {listed}).")
        wanted = {n.lower() for n in names}
        stamp = now()
        return [
            replace(a, revoked=a.revoked or stamp) if a.name.lower() in wanted else a
            for a in attendees
        ]

    return _change(path, change)


def add_keys(path: Path, names: list[str]) -> list[Attendee]:
    """New attendees with fresh keys, added to an existing file (a running server notices)."""

    def change(attendees: list[Attendee]) -> list[Attendee]:
        fresh = check_names(names, taken=[a.name for a in attendees])
        stamp = now()
        return attendees + [Attendee(n, new_key(), stamp) for n in fresh]

    return _change(path, change)


# -- the server's view --------------------------------------------------------------------------
class Keyring:
    """The keys file as a server sees it: `match(key)` finds whose key it is, in constant time
    per entry; the file is re-read when it changes (looked at at most once a `check_every`)."""

    def __init__(self, path: Path, check_every: float = 1.0):
        self.path = Path(path)
        self.check_every = check_every
        self._lock = threading.Lock()
        self._seen: tuple | None = None
        self._checked = float("-inf")
        self._entries: list[tuple[bytes, Attendee]] = []
        self._load(self._signature(), read_keys(self.path))
        with contextlib.suppress(OSError):
            if (mode := self.path.stat().st_mode & 0o777) & 0o077:
                log.warning(
                    "keys file %s can be read by other users (mode %o): chmod 600 it",
                    self.path.name,
                    mode,
                )

    @property
    def attendees(self) -> list[Attendee]:
        self.refresh()
        return [a for _, a in self._entries]

    def match(self, key: str) -> Attendee | None:
        """The attendee whose key this is (revoked or not), or None. Every entry is compared
        (hmac.compare_digest on SHA-256 digests): the time taken tells nothing about the key."""
        self.refresh()
        digest = hashlib.sha256(key.encode()).digest()
        found = None
        for stored, attendee in self._entries:
            if hmac.compare_digest(stored, digest):
                found = attendee
        return found

    def refresh(self) -> None:
        """Re-read the file if it changed; a file that cannot be read keeps the keys known."""
        with self._lock:
            clock = time.monotonic()
            if clock - self._checked < self.check_every:
                return
            self._checked = clock
            signature = self._signature()
            if signature == self._seen:
                return
            try:
                attendees = read_keys(self.path)
            except KeysFileError as exc:
                log.warning("keys file not re-read, still using the keys read before: %s", exc)
                self._seen = signature  # warn once per change
                return
            self._load(signature, attendees)

    def _signature(self) -> tuple | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _load(self, signature: tuple | None, attendees: list[Attendee]) -> None:
        before = {a.name for _, a in self._entries if not a.active}
        self._entries = [(hashlib.sha256(a.key.encode()).digest(), a) for a in attendees]
        self._seen = signature
        revoked = [a.name for a in attendees if not a.active]
        newly = [n for n in revoked if n not in before]
        log.info(
            "keys file %s read: %d attendee keys, %d revoked%s",
            self.path.name,
            len(attendees),
            len(revoked),
            f" (now also: {', '.join(newly)})" if newly and self._checked > float("-inf") else "",
        )


# -- the teacher's view of a running server (GET /admin/usage) -------------------------------------
USAGE_COLUMNS = (
    ("name", "attendee"),
    ("requests", "requests"),
    ("rate_limited", "429s"),
    ("prompt_tokens", "prompt tokens"),
    ("completion_tokens", "completion tokens"),
    ("total_tokens", "tokens"),
    ("last_request", "last request (UTC)"),
    ("revoked", "revoked (UTC)"),
)
COUNTS = ("requests", "rate_limited", "prompt_tokens", "completion_tokens", "total_tokens")


class UsageError(RuntimeError):
    """The usage table could not be fetched; the message says why (never with the key)."""


def server_root(endpoint: str) -> str:
    """The server's root URL from what a client is given (`.../v1`, `.../openai/v1` too)."""
    root = endpoint.strip().rstrip("/")
    for suffix in ("/openai/v1", "/v1", "/models"):
        root = root.removesuffix(suffix)
    return root


def fetch_usage(endpoint: str, admin_key: str, timeout: float = 10.0) -> dict:
    """GET /admin/usage with the teacher's key: {"since", "keys_file", "data": [row, ...]}."""
    import httpx

    if not admin_key:
        raise UsageError(
            "the usage table needs the server's admin key: set PHI_LOCAL_API_KEY to the key "
            "the server was started with."
        )
    url = server_root(endpoint) + "/admin/usage"
    try:
        r = httpx.get(url, headers={"Authorization": f"Bearer {admin_key}"}, timeout=timeout)
    except httpx.HTTPError as exc:
        raise UsageError(f"cannot reach {url}: {exc}") from None
    try:
        body = r.json()
    except ValueError:
        body = {}
    if r.status_code != 200:
        message = (body.get("error") or {}).get("message") if isinstance(body, dict) else None
        raise UsageError(f"{url} answered HTTP {r.status_code}: {message or r.text[:200]}")
    return body


def _time_of_day(stamp: str | None) -> str:
    return stamp[11:19] if stamp else "-"


def format_usage(report: dict) -> str:
    """The usage report as a plain-text table, one line per attendee and a total."""
    rows = [
        [
            str(row["name"]),
            *(str(row.get(c, 0)) for c in COUNTS),
            _time_of_day(row.get("last_request")),
            _time_of_day(row.get("revoked")),
        ]
        for row in report.get("data", [])
    ]
    totals = [sum(int(r.get(c, 0)) for r in report.get("data", [])) for c in COUNTS]
    rows.append(["total", *map(str, totals), "", ""])
    header = [title for _, title in USAGE_COLUMNS]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    numeric = range(1, 1 + len(COUNTS))

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    since = report.get("since", "?")
    keys_file = report.get("keys_file") or "no keys file"
    title = f"usage since {since} ({keys_file})"
    return "\n".join([title, line(header), *map(line, rows)])
