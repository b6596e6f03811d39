"""A small HTTP file server on 127.0.0.1 that answers like Hugging Face's `resolve` URLs.

It stands in for the hub (which these machines cannot reach) so the real download code runs
over real sockets:

    HEAD /<repo>/resolve/<rev>/<file>  -> 302 to /cdn/<file>, with X-Linked-Size and
                                          X-Linked-Etag (the SHA-256) like the hub sends
    GET  /<repo>/resolve/<rev>/<file>  -> 302 to /cdn/<file>
    GET  /cdn/<file>                   -> the bytes; honours `Range: bytes=N-` with 206

`cut_after=N` makes the first full GET send N bytes and then drop the connection.
`corrupt=True` serves the file with one byte changed. `etag=None` announces no checksum.
Every request is recorded in `requests` as (method, path, Range header), so a test can check
which revision was asked for (the path carries it, as on the hub).
"""

from __future__ import annotations

import hashlib
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class LocalHub:
    def __init__(self, file: Path, *, cut_after: int = 0, corrupt: bool = False, etag="real"):
        self.file = Path(file)
        self.size = self.file.stat().st_size
        self.cut_after = cut_after
        self.corrupt = corrupt
        self._etag = etag
        self._sha: str | None = None
        self.requests: list[tuple[str, str, str | None]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def sha256(self) -> str:
        if self._sha is None:
            self._sha = sha256_of(self.file)
        return self._sha

    @property
    def etag(self) -> str | None:
        return self.sha256 if self._etag == "real" else self._etag

    def gets(self) -> list[tuple[str, str, str | None]]:
        return [r for r in self.requests if r[0] == "GET" and r[1].startswith("/cdn/")]

    def __enter__(self) -> LocalHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _handler(hub: LocalHub):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet
            pass

        def _record(self) -> None:
            hub.requests.append((self.command, self.path, self.headers.get("Range")))

        def _redirect(self) -> None:
            self.send_response(302)
            self.send_header("Location", f"/cdn/{self.path.rsplit('/', 1)[-1]}")
            self.send_header("X-Linked-Size", str(hub.size))
            if hub.etag:
                self.send_header("X-Linked-Etag", f'"{hub.etag}"')
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_HEAD(self) -> None:
            self._record()
            if "/resolve/" in self.path:
                return self._redirect()
            self.send_error(404)

        def do_GET(self) -> None:
            self._record()
            if "/resolve/" in self.path:
                return self._redirect()
            if not self.path.startswith("/cdn/"):
                return self.send_error(404)
            start = 0
            rng = self.headers.get("Range")
            if rng and rng.startswith("bytes=") and rng.endswith("-"):
                start = int(rng[6:-1])
                if start >= hub.size:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{hub.size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{hub.size - 1}/{hub.size}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(hub.size - start))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            limit = hub.size
            if hub.cut_after and start == 0:
                limit, hub.cut_after = hub.cut_after, 0  # cut only the first full download
            with open(hub.file, "rb") as f:
                f.seek(start)
                pos = start
                while pos < limit:
                    block = f.read(min(1 << 20, limit - pos))
                    if hub.corrupt and pos == start:
                        block = bytes([block[0] ^ 0xFF]) + block[1:]
                    self.wfile.write(block)
                    pos += len(block)
            if limit < hub.size:  # drop the connection mid-file
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True

    return Handler
