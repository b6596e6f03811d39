"""Every error the server returns, in the API's own shape: {"error": {"code", "message"}}."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

# FastAPI is imported when a response is made, not with this module: settings.py and models.py
# import it, and `serve` starts loading the model before the web stack is imported (bootstrap.py).
if TYPE_CHECKING:
    from fastapi.responses import JSONResponse


class ApiError(Exception):
    """An error with an HTTP status, a short machine code and a sentence for a human."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        return error_response(self.status, self.code, self.message, self.headers)


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    from fastapi.responses import JSONResponse

    return JSONResponse(
        {"error": {"code": code, "message": message, "status": status}},
        status_code=status,
        headers=headers,
    )


def bad_request(message: str, code: str = "invalid_request") -> ApiError:
    return ApiError(400, code, message)


def too_many_requests(message: str, retry_after_seconds: float) -> ApiError:
    """429 with the headers azure-core and openai-python honour, so their retries succeed."""
    millis = max(0, math.ceil(retry_after_seconds * 1000))  # never sooner than promised
    seconds = max(1, math.ceil(millis / 1000))
    return ApiError(
        429,
        "too_many_requests",
        message,
        {"Retry-After": str(seconds), "retry-after-ms": str(millis)},
    )
