"""Checks every request passes before any work starts: the key, the content type, the size."""

from __future__ import annotations

import hashlib
import hmac

from fastapi import Request

from .errors import ApiError


def presented_key(request: Request) -> str:
    auth = request.headers.get("authorization", "")
    given = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
    return given or request.headers.get("api-key", "").strip()


def authenticate(request: Request) -> str:
    """A route dependency: checks the key (if the server has one) and returns who is asking,
    for per-key limits.

    Both `Authorization: Bearer` and `api-key` are accepted; compared in constant time. The
    identity is a hash of the presented key (never the key), or the client address.
    """
    expected = request.app.state.settings.api_key
    given = presented_key(request)
    if expected and not hmac.compare_digest(given.encode(), expected.encode()):
        raise ApiError(
            401,
            "unauthorized",
            "Missing or wrong API key. This server requires a key: send it as "
            "'Authorization: Bearer <key>' or 'api-key: <key>' (the server's PHI_LOCAL_API_KEY).",
        )
    if given:
        return "key-" + hashlib.sha256(given.encode()).hexdigest()[:12]
    return request.client.host if request.client else "anonymous"


def check_content_type(request: Request) -> None:
    """A body sent as something other than JSON (curl -d without -H) is refused, clearly."""
    mime = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if mime and mime != "application/json" and not mime.endswith("+json"):
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
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)
