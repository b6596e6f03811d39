"""Who may talk to the server from a browser: the Host and Origin checks.

The server listens on the learner's own machine while the learner browses the web. Two ways a
web page could reach it, and what stops them:

- DNS rebinding (the attack that hit Ollama, CVE-2024-28224): a page on evil.example makes its
  name resolve to 127.0.0.1 and then calls the server as "evil.example". Requests are answered
  only when their Host is a name this server is meant to be reached by: loopback names, the
  address it is bound to, the machine's own names when bound to every interface, and any
  `--allowed-host`.
- Cross-site requests: a page's fetch() carries its Origin. One from a site not named with
  `--cors-origin` is refused before any work (loopback origins, such as a local dev server on
  another port, are the learner's own and allowed). A "simple" cross-site POST without a
  Content-Type (which a browser sends without a CORS preflight) is refused by guards.py.
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

from .errors import error_response
from .settings import ServeSettings

LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "ip6-localhost"}
ANY_ADDRESS = {"0.0.0.0", "::", ""}


def _host_name(value: str) -> str:
    """'Example.COM:8765' -> 'example.com'; '[::1]:80' -> '::1'."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def allowed_hosts(settings: ServeSettings) -> set[str]:
    names = set(LOOPBACK_NAMES) | {_host_name(h) for h in settings.allowed_host}
    if settings.host in ANY_ADDRESS:
        hostname = socket.gethostname()
        names |= {hostname.lower(), socket.getfqdn().lower()}
        try:
            names |= {info[4][0] for info in socket.getaddrinfo(hostname, None)}
        except OSError:
            pass
        names.add("*lan*")  # any address of this machine: checked per request below
    else:
        names.add(_host_name(settings.host))
    return names


def _is_own_address(name: str) -> bool:
    """Is `name` an IP address of this machine (a public bind is reached through those)?"""
    try:
        with socket.socket(socket.AF_INET6 if ":" in name else socket.AF_INET) as s:
            s.bind((name, 0))
        return True
    except OSError:
        return False


class HostAndOriginGuard:
    """ASGI middleware: 403 for a Host or an Origin this server must not answer."""

    def __init__(self, app, settings: ServeSettings):
        self.app = app
        self.hosts = allowed_hosts(settings)
        self.origins = {o.rstrip("/").lower() for o in settings.cors_origin if o}

    def _host_ok(self, host: str) -> bool:
        name = _host_name(host)
        return name in self.hosts or ("*lan*" in self.hosts and _is_own_address(name))

    def _origin_ok(self, origin: str) -> bool:
        """A page's origin: one named with --cors-origin, or one on a host the server answers
        for (its own pages, a dev server on another loopback port). Opaque origins ("null":
        sandboxed frames, local files) are refused."""
        if origin.rstrip("/").lower() in self.origins:
            return True
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and self._host_ok(parts.netloc)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        origin = headers.get("origin", "")
        if host and not self._host_ok(host):
            code, message = (
                "forbidden_host",
                (
                    f"This server does not answer requests for the host '{_host_name(host)}' (a "
                    "web page may be trying to reach it through DNS rebinding). Call it as "
                    "localhost or 127.0.0.1, or start it with --allowed-host NAME."
                ),
            )
        elif origin and not self._origin_ok(origin):
            code, message = (
                "forbidden_origin",
                (
                    f"Requests from the web page origin '{origin}' are not allowed. To let a "
                    "page call this server, start it with --cors-origin ORIGIN."
                ),
            )
        else:
            return await self.app(scope, receive, send)
        await error_response(403, code, message)(scope, receive, send)
