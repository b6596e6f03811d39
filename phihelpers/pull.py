"""Download a real Phi model (a GGUF file) for the local server: `python -m phihelpers pull phi-4-mini`.

    from phihelpers.pull import pull
    result = pull("phi-4-mini")     # progress bar in a terminal or a notebook
    result.path                     # ~/.cache/phihelpers/models/Phi-4-mini-instruct-Q4_K_M.gguf

What it promises:
- the file only ever appears under its final name complete and checked: bytes go to
  `<name>.part`, which is flushed to disk, checked against its SHA-256 and only then renamed;
- a broken download resumes where it stopped (HTTP Range on the `.part` file);
- it refuses, with a sentence saying why and what to do, when the source cannot be reached,
  when the disk is too small (checked before the first byte), or when the checksum is wrong
  (the `.part` is deleted);
- the file is fetched at the repository commit the catalog pins (`Entry.url`, never `main`);
  an entry without a 40-hex commit is refused before any request;
- the SHA-256 comes from the catalog when one was published, else from the one Hugging Face
  announces for the file (`X-Linked-Etag`); when both exist they must agree. A file no
  checksum can vouch for is refused unless `allow_unverified=True`.

Plain HTTPS with httpx; the source is PHI_HF_ENDPOINT (default https://huggingface.co), so a
mirror, or a test server on 127.0.0.1, can stand in for the hub.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from .catalog import Entry, get, pull_record

CHUNK = 1 << 20
MIN_MARGIN = 200 * 1024 * 1024  # room left free after the download (bytes) ...
MARGIN_FRACTION = 0.02  # ... or this share of the file, whichever is bigger
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class PullError(RuntimeError):
    """The download was refused or failed; the message says why and what to do."""


@dataclass
class PullResult:
    name: str
    path: Path
    size: int
    sha256: str
    sha256_source: str
    fetched_bytes: int = 0  # bytes transferred by this call (0 when already present)
    resumed_from: int = 0  # bytes already in the .part file when this call started
    already_present: bool = False


def _gb(n: int | float) -> str:
    return f"{n / 1e9:.2f} GB"


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _existing_parent(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _etag_sha256(headers: httpx.Headers, plain_etag: bool = True) -> str:
    """The SHA-256 an LFS file's ETag carries (Hugging Face: X-Linked-Etag), or ''.

    A plain ETag counts only when it comes from the source itself, not from a CDN it
    redirected to (a CDN's ETag can be another 64-hex hash).
    """
    for name in ("x-linked-etag", "etag") if plain_etag else ("x-linked-etag",):
        value = headers.get(name, "").strip()
        value = value.removeprefix("W/").strip('"').lower()
        if _HEX64.match(value):
            return value
    return ""


def _size_header(headers: httpx.Headers) -> int:
    for name in ("x-linked-size", "content-length"):
        value = headers.get(name, "")
        if value.isdigit():
            return int(value)
    return 0


def _offline(url: str, exc: Exception) -> PullError:
    host = httpx.URL(url).host
    return PullError(
        f"cannot reach {host} ({type(exc).__name__}); you appear to be offline, or a "
        "firewall or proxy blocks it. Connect to the internet and run the same command again "
        "(a partial download resumes). PHI_HF_ENDPOINT can point at a mirror."
    )


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _already_there(entry: Entry, final: Path) -> PullResult | None:
    """A file under the final name was verified when it was pulled; trust its record."""
    if not final.is_file():
        return None
    size = final.stat().st_size
    try:
        record = json.loads(pull_record(final).read_text())
    except (OSError, ValueError):
        record = None
    if record and record.get("size") == size and _HEX64.match(str(record.get("sha256", ""))):
        if not entry.sha256 or entry.sha256 == record["sha256"]:
            return PullResult(
                entry.name,
                final,
                size,
                record["sha256"],
                record.get("source", ""),
                already_present=True,
            )
    if entry.sha256 and _sha256_of(final) == entry.sha256:  # put there by hand: check it once
        _write_sidecar(final, size, entry.sha256, entry.sha256_source)
        return PullResult(
            entry.name, final, size, entry.sha256, entry.sha256_source, already_present=True
        )
    return None


def _write_sidecar(final: Path, size: int, sha256: str, source: str) -> None:
    pull_record(final).write_text(json.dumps({"size": size, "sha256": sha256, "source": source}))


def check_free_space(
    directory: Path, needed: int, free_space: Callable[[Path], int] | None = None
) -> None:
    """Refuse (PullError) unless `needed` bytes plus a margin fit in `directory`'s file system."""
    free = (free_space or (lambda p: shutil.disk_usage(p).free))(_existing_parent(directory))
    margin = max(MIN_MARGIN, int(needed * MARGIN_FRACTION))
    if free < needed + margin:
        raise PullError(
            f"not enough disk space in {directory}: the download needs {_gb(needed)} more "
            f"(plus {_gb(margin)} to spare) but only {_gb(free)} is free. Free some space, or "
            "set PHI_MODELS_DIR to a folder on a bigger disk, and run the same command again."
        )


def _pinned_entry(name: str | Entry) -> Entry:
    """The entry to pull; refused unless it has a GGUF pinned to a repository commit."""
    entry = name if isinstance(name, Entry) else get(name)
    if not entry.pullable:
        raise PullError(
            f"{entry.model} has no GGUF in the catalog that the local server can run. "
            f"{entry.notes} Models you can pull: `python -m phihelpers pull --list`."
        )
    if not entry.pinned:
        raise PullError(
            f"{entry.name}'s GGUF is not pinned to a repository commit (revision "
            f"{entry.gguf_revision or 'empty'!r}), so the file behind it can change. Give "
            "`gguf_revision` a 40-hex commit of the repository and run the same command again."
        )
    return entry


def pull(
    name: str | Entry,
    models_dir: Path | str | None = None,
    endpoint: str | None = None,
    *,
    progress: bool = True,
    allow_unverified: bool = False,
    free_space: Callable[[Path], int] | None = None,
    timeout: float = 30.0,
    transport: httpx.BaseTransport | None = None,
) -> PullResult:
    """Download a catalog model's GGUF into the models dir, verified; see the module docstring.

    `free_space(path) -> bytes` replaces `shutil.disk_usage` (for tests and odd file systems).
    """
    entry = _pinned_entry(name)
    if models_dir is None or endpoint is None:
        from .config import load_settings

        settings = load_settings()
        models_dir = settings.models_dir if models_dir is None else models_dir
        endpoint = settings.hf_endpoint if endpoint is None else endpoint
    models_dir = Path(models_dir).expanduser()
    final = models_dir / entry.local_file
    part = final.with_name(final.name + ".part")

    present = _already_there(entry, final)
    if present:
        return present

    url = entry.url(endpoint)
    with httpx.Client(timeout=timeout, transport=transport, follow_redirects=True) as client:
        expected_sha, sha_source, size = _metadata(client, entry, url, allow_unverified)
        have = part.stat().st_size if part.is_file() else 0
        if have > size:  # not the file we expect: start again
            part.unlink()
            have = 0
        check_free_space(models_dir, size - have, free_space)
        # Private like the state directory it usually sits in (phihelpers.state): a parent made
        # here is made 0700 too, so a group-writable umask does not leave it open.
        models_dir.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        models_dir.mkdir(mode=0o700, exist_ok=True)
        with open(models_dir / f".{entry.local_file}.lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise PullError(
                    f"another `pull {entry.name}` is running into {models_dir}; wait for it."
                ) from None
            have = part.stat().st_size if part.is_file() else 0
            fetched, have = _download(client, url, part, have, size, entry.name, progress)
            actual = _sha256_of(part)
            if expected_sha and actual != expected_sha:
                part.unlink()
                raise PullError(
                    f"checksum mismatch for {entry.local_file}: expected SHA-256 {expected_sha} "
                    f"({sha_source}) but the downloaded file has {actual}. The partial file was "
                    "deleted. Run the same command again; if it fails again, the file at "
                    f"{url} is not the one the catalog vouches for, so do not use it."
                )
            os.replace(part, final)
            _write_sidecar(final, size, actual, sha_source)
            _fsync_dir(models_dir)
    return PullResult(entry.name, final, size, actual, sha_source, fetched, have)


def _metadata(
    client: httpx.Client, entry: Entry, url: str, allow_unverified: bool
) -> tuple[str, str, int]:
    """Ask the source (HEAD, no redirects) for the file's size and published SHA-256."""
    try:
        r = client.head(url, follow_redirects=False, headers={"Accept-Encoding": "identity"})
        if r.status_code in (301, 302, 303, 307, 308) and not (
            r.headers.get("x-linked-etag") or r.headers.get("x-linked-size")
        ):
            r = client.head(url, headers={"Accept-Encoding": "identity"})  # a renamed repo
    except httpx.TransportError as exc:
        raise _offline(url, exc) from None
    if r.status_code in (401, 403, 404):
        raise PullError(
            f"the source answered HTTP {r.status_code} for {url}: the file is gone or private. "
            "The catalog may be out of date; update phihelpers, or report it."
        )
    if r.status_code >= 400:
        raise PullError(f"the source answered HTTP {r.status_code} for {url}; try again later.")
    hub_sha = _etag_sha256(r.headers, plain_etag=r.url.host == httpx.URL(url).host)
    size = _size_header(r.headers) or entry.gguf_size_bytes
    if entry.sha256 and hub_sha and entry.sha256 != hub_sha:
        raise PullError(
            f"the file at {url} changed since the catalog was written: the source says its "
            f"SHA-256 is {hub_sha}, the catalog pinned {entry.sha256}. Nothing was downloaded."
        )
    if entry.sha256:
        return entry.sha256, entry.sha256_source, size
    if hub_sha:
        return hub_sha, f"announced by {httpx.URL(url).host} (X-Linked-Etag) at download time", size
    if allow_unverified:
        return "", "unverified", size
    raise PullError(
        f"no SHA-256 is known for {url} (none in the catalog, none announced by the source), so "
        "a damaged or substituted file could not be told apart. Refusing; pass "
        "allow_unverified=True (--allow-unverified) only if you trust the source."
    )


def _download(
    client: httpx.Client, url: str, part: Path, have: int, size: int, label: str, progress: bool
) -> tuple[int, int]:
    """Fetch bytes `have`.. into `part` (Range), with a progress bar.

    Returns (bytes fetched now, bytes kept from before).
    """
    from tqdm.auto import tqdm

    if size and have == size:
        return 0, have
    headers = {"Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    fetched = 0
    bar = tqdm(
        total=size or None,
        initial=have,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=label,
        disable=not progress,
    )
    try:
        with client.stream("GET", url, headers=headers) as r:
            if r.status_code == 416 and have:  # asked past the end: the part is no good
                part.unlink()
                raise PullError(
                    f"the source refused to resume {part.name}; the partial file was deleted. "
                    "Run the same command again to start over."
                )
            if r.status_code not in (200, 206):
                raise PullError(f"the source answered HTTP {r.status_code} for {url}.")
            mode = "ab" if r.status_code == 206 else "wb"  # 200: the server ignored Range
            if mode == "wb" and have:
                have = 0
                bar.reset(total=size or None)
            with part.open(mode) as out:
                try:
                    for block in r.iter_bytes(CHUNK):
                        out.write(block)
                        fetched += len(block)
                        bar.update(len(block))
                finally:
                    out.flush()
                    os.fsync(out.fileno())
    except httpx.ConnectError as exc:
        raise _offline(url, exc) from None
    except httpx.TransportError as exc:
        done = part.stat().st_size if part.exists() else 0
        raise PullError(
            f"the download broke off after {_gb(done)} of {_gb(size)} ({type(exc).__name__}). "
            f"The part is kept in {part}; run the same command again to resume."
        ) from None
    finally:
        bar.close()
    done = part.stat().st_size
    if size and done != size:
        raise PullError(
            f"the download stopped at {_gb(done)} of {_gb(size)}. The part is kept in {part}; "
            "run the same command again to resume."
        )
    return fetched, have
