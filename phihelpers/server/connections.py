"""Bounds on connections, so idle or half-sent ones cannot starve the server (slowloris).

uvicorn's HTTP/1.1 protocol (h11) times out only the idle time *between* requests; a
connection that never sends a request, stops in the middle of its headers, or sends headers
and no body would stay open for ever, and each holds a file descriptor. This protocol adds:

- a request deadline: from the connection's first moment (or the first byte of the next
  request on a kept-alive connection) the whole request, headers and body, must arrive within
  `request_timeout` seconds, or the connection is closed;
- a ceiling on open connections: past `max_connections` a new one is closed at once.

Answers can take as long as they need: the deadline stops once the request has arrived.
"""

from __future__ import annotations

import logging
import time

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("phihelpers.server")

ARRIVED = (h11.DONE, h11.MUST_CLOSE, h11.CLOSED, h11.ERROR)
_last_said: dict[str, float] = {}


def _say_now_and_then(key: str, message: str, *args) -> None:
    """At most one line a minute per kind: a flood of connections must not flood the log."""
    now = time.monotonic()
    if now - _last_said.get(key, -3600.0) >= 60:
        _last_said[key] = now
        log.warning(message + " (said at most once a minute)", *args)


def guarded_protocol(request_timeout: float, max_connections: int) -> type[H11Protocol]:
    """An H11Protocol class with these bounds (uvicorn.Config(http=...) takes a class)."""

    class GuardedH11Protocol(H11Protocol):
        _deadline = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                _say_now_and_then(
                    "full", "more than %d connections open: closing new ones", max_connections
                )
                transport.close()
                return
            self._arm()

        def _arm(self) -> None:
            self._deadline = self.loop.call_later(request_timeout, self._too_slow)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _too_slow(self) -> None:
            self._deadline = None
            if self.conn.their_state not in ARRIVED and not self.transport.is_closing():
                log.info(
                    "closing a connection whose request did not arrive in %g s", request_timeout
                )
                self.transport.close()

        def data_received(self, data: bytes) -> None:
            if self._deadline is None and self.conn.their_state is h11.IDLE:
                self._arm()  # the next request on a kept-alive connection
            super().data_received(data)
            if self.conn.their_state in ARRIVED:
                self._disarm()

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

    return GuardedH11Protocol
