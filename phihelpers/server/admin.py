"""The teacher's side of a workshop server: attendee keys, and who used how much.

    install(app)          in create_app: the keyring (from --keys-file), the usage count, the route
    GET /admin/usage      needs the teacher's key (PHI_LOCAL_API_KEY): per attendee, requests
                          (every one that presented the attendee's key, refused ones too), 429s
                          and tokens (prompt + completion, of finished answers)

`python -m phihelpers keys usage` prints the same as a table (phihelpers/keys.py). Requests and
429s are counted by a middleware from each answer's status and the caller's identity, which
`authenticate` leaves in `request.state.caller`; tokens by the routes that know them
(`app.state.usage.add_tokens`), when an answer is finished. Names only, never a key.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import APIRouter, Depends, FastAPI, Request
from starlette.middleware import Middleware

from ..keys import Keyring
from .guards import require_admin

router = APIRouter()


def _stamp(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Tally:
    requests: int = 0
    rate_limited: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    last_request: float | None = None

    def row(self) -> dict:
        return {
            "requests": self.requests,
            "rate_limited": self.rate_limited,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "last_request": _stamp(self.last_request),
        }


class UsageCount:
    """Requests, 429s and tokens per caller (updated on the event loop only)."""

    def __init__(self):
        self.since = time.time()
        self.callers: dict[str, Tally] = {}

    def record(self, caller: str, status: int) -> None:
        tally = self.callers.setdefault(caller, Tally())
        tally.requests += 1
        tally.last_request = time.time()
        if status == 429:
            tally.rate_limited += 1

    def add_tokens(self, caller: str, prompt_tokens: int, completion_tokens: int = 0) -> None:
        """A finished answer's tokens (chat or embeddings), for its caller."""
        tally = self.callers.setdefault(caller, Tally())
        tally.prompt_tokens += prompt_tokens
        tally.completion_tokens += completion_tokens

    def report(self, keyring: Keyring | None) -> dict:
        """Every attendee in the keys file (in its order, those without requests too), then
        any other caller (the teacher's 'admin', or callers of a server without a keys file)."""
        rows, listed = [], set()
        for a in keyring.attendees if keyring else []:
            tally = self.callers.get(a.name, Tally())
            rows.append({"name": a.name, **tally.row(), "revoked": a.revoked or None})
            listed.add(a.name)
        for name, tally in self.callers.items():
            if name not in listed:
                rows.append({"name": name, **tally.row(), "revoked": None})
        return {
            "object": "usage",
            "since": _stamp(self.since),
            "keys_file": keyring.path.name if keyring else None,
            "data": rows,
        }


class CountUsage:
    """ASGI middleware: after each answer, counts it (and a 429) for the caller `authenticate`
    named."""

    def __init__(self, asgi, count: UsageCount):
        self.asgi = asgi
        self.count = count

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.asgi(scope, receive, send)
        seen = {"status": 0}

        async def watch(message):
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
            await send(message)

        try:
            await self.asgi(scope, receive, watch)
        finally:
            caller = (scope.get("state") or {}).get("caller")
            if caller:
                self.count.record(caller, seen["status"])


@router.get("/admin/usage", include_in_schema=False)
async def usage(request: Request, _admin: None = Depends(require_admin)) -> dict:
    state = request.app.state
    return state.usage.report(state.keyring)


def install(app: FastAPI) -> None:
    """Attendee keys (if --keys-file is set), the usage count and GET /admin/usage."""
    settings = app.state.settings
    app.state.keyring = Keyring(settings.keys_file) if settings.keys_file else None
    app.state.usage = UsageCount()
    # innermost of the middleware (appended, not inserted first): it sees each answer as the
    # routes and error handlers made it, and stays inside the guards that come before any work
    app.user_middleware.append(Middleware(CountUsage, count=app.state.usage))
    app.include_router(router)
