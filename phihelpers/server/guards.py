"""Checks every request passes before any work starts: the key, the content type, the size."""

from __future__ import annotations

import hashlib
import hmac

from fastapi import Request
from starlette.requests import ClientDisconnect

from ..keys import ADMIN
from .errors import ApiError


def presented_key(request: Request) -> str:
    auth = request.headers.get("authorization", "")
    given = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
    return given or request.headers.get("api-key", "").strip()


WRONG_KEY = (
    "Missing or wrong API key. This server requires a key: send it as "
    "'Authorization: Bearer <key>' or 'api-key: <key>' (the server's PHI_LOCAL_API_KEY"
)


def _same(given: str, expected: str) -> bool:
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


def authenticate(request: Request) -> str:
    """A route dependency: checks the key (if the server has one) and returns who is asking,
    for per-key limits and the usage table (also kept as `request.state.caller`).

    Both `Authorization: Bearer` and `api-key` are accepted; compared in constant time. The
    identity is never the key: 'admin' for the server's PHI_LOCAL_API_KEY, the attendee's name
    for a key from --keys-file, else a hash of the presented key, or the client address.
    """
    state = request.app.state
    expected = state.settings.api_key
    keyring = getattr(state, "keyring", None)
    given = presented_key(request)
    if _same(given, expected):
        return _caller(request, ADMIN)
    if keyring is not None:
        attendee = keyring.match(given) if given else None
        if attendee is None:
            raise ApiError(401, "unauthorized", WRONG_KEY + " or an attendee's key).")
        _caller(request, attendee.name)
        if not attendee.active:
            raise ApiError(
                401,
                "key_revoked",
                f"This API key (attendee '{attendee.name}') was revoked at {attendee.revoked} "
                "(UTC). Ask the workshop's teacher for a new key.",
            )
        return attendee.name
    if expected:
        raise ApiError(401, "unauthorized", WRONG_KEY + ").")
    if given:
        return _caller(request, "key-" + hashlib.sha256(given.encode()).hexdigest()[:12])
    return _caller(request, request.client.host if request.client else "anonymous")


def _caller(request: Request, identity: str) -> str:
    request.state.caller = identity  # read by the usage count (admin.py)
    return identity


def require_admin(request: Request) -> None:
    """A route dependency for the teacher's views: only the server's PHI_LOCAL_API_KEY."""
    expected = request.app.state.settings.api_key
    given = presented_key(request)
    if not expected:
        raise ApiError(
            403,
            "forbidden",
            "The admin view needs the teacher's key, and this server has none: start it with "
            "PHI_LOCAL_API_KEY set (a strong secret) and send that key.",
        )
    if _same(given, expected):
        return
    keyring = getattr(request.app.state, "keyring", None)
    if given and keyring is not None and keyring.match(given) is not None:
        raise ApiError(
            403,
            "forbidden",
            "This is an attendee's key; the admin view needs the teacher's key (the server's "
            "PHI_LOCAL_API_KEY).",
        )
    raise ApiError(401, "unauthorized", WRONG_KEY + ").")


def check_content_type(request: Request) -> None:
    """A body sent as something other than JSON (curl -d without -H) is refused, clearly. So
    is one with no Content-Type at all: that is what a web page's cross-site "simple" request
    looks like (it needs no CORS preflight), and every API client sends the header."""
    mime = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not mime:
        raise ApiError(
            415,
            "unsupported_media_type",
            "The request has no Content-Type: send the JSON body with the header "
            "'Content-Type: application/json'.",
        )
    if mime != "application/json" and not mime.endswith("+json"):
        raise ApiError(
            415,
            "unsupported_media_type",
            f"The request body is sent as '{mime}', but this API takes JSON: send it with the "
            "header 'Content-Type: application/json'.",
        )


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to be larger than `limit` bytes."""
    too_large = ApiError(
        413, "payload_too_large", f"The request body is larger than {limit} bytes."
    )
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise too_large
    except ClientDisconnect:  # gone, or cut off by the request deadline (connections.py)
        raise ApiError(400, "request_incomplete", "The request body did not arrive.") from None
    return bytes(body)
