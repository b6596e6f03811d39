"""Unit tests for phihelpers/server/errors.py: one error shape, and the retry headers of a 429.

The shape is {"error": {"code", "message", "status"}}. Only a 429 carries Retry-After (seconds)
and retry-after-ms: azure-core retries any response that has Retry-After, so a 400 with it would
be sent again and again (see /work/shared/PROTOCOL.md, "Retries").
"""

from __future__ import annotations

import json

import pytest

from phihelpers.server.errors import ApiError, bad_request, error_response, too_many_requests


def body_of(response) -> dict:
    return json.loads(response.body)


def test_error_response_has_the_api_shape():
    response = error_response(404, "model_not_found", "No such model.")
    assert response.status_code == 404
    assert response.media_type == "application/json"
    assert response.headers["content-type"] == "application/json"
    assert body_of(response) == {
        "error": {"code": "model_not_found", "message": "No such model.", "status": 404}
    }


def test_error_response_sends_the_given_headers():
    response = error_response(503, "busy", "Later.", {"X-Why": "because"})
    assert response.headers["x-why"] == "because"
    assert "retry-after" not in response.headers


def test_api_error_keeps_its_parts_and_is_an_exception_with_its_message():
    err = ApiError(413, "payload_too_large", "Too big.", {"X-Limit": "10"})
    assert isinstance(err, Exception)
    assert (err.status, err.code, err.message, err.headers) == (
        413,
        "payload_too_large",
        "Too big.",
        {"X-Limit": "10"},
    )
    assert str(err) == "Too big."
    with pytest.raises(ApiError, match="^Too big.$"):
        raise err


def test_api_error_without_headers_has_an_empty_dict_of_its_own():
    a, b = ApiError(500, "internal_error", "x"), ApiError(500, "internal_error", "y")
    assert a.headers == {}
    a.headers["X"] = "1"
    assert b.headers == {}  # not one shared default


def test_api_error_response():
    response = ApiError(401, "unauthorized", "Missing key.").response()
    assert response.status_code == 401
    assert body_of(response) == {
        "error": {"code": "unauthorized", "message": "Missing key.", "status": 401}
    }
    assert "retry-after" not in response.headers
    assert "retry-after-ms" not in response.headers


def test_bad_request_is_a_400_without_retry_headers():
    err = bad_request("max_tokens must be at least 1.")
    assert (err.status, err.code, err.message) == (
        400,
        "invalid_request",
        "max_tokens must be at least 1.",
    )
    assert err.headers == {}
    response = err.response()
    assert response.status_code == 400
    assert body_of(response) == {
        "error": {
            "code": "invalid_request",
            "message": "max_tokens must be at least 1.",
            "status": 400,
        }
    }
    assert "retry-after" not in response.headers


def test_bad_request_takes_a_more_precise_code():
    err = bad_request("Prompt too long.", code="context_length_exceeded")
    assert (err.status, err.code) == (400, "context_length_exceeded")
    assert body_of(err.response())["error"]["code"] == "context_length_exceeded"


def test_too_many_requests_shape():
    err = too_many_requests("Slow down.", 2.5)
    assert (err.status, err.code, err.message) == (429, "too_many_requests", "Slow down.")
    assert err.headers == {"Retry-After": "3", "retry-after-ms": "2500"}
    response = err.response()
    assert response.status_code == 429
    assert response.headers["retry-after"] == "3"
    assert response.headers["retry-after-ms"] == "2500"
    assert body_of(response) == {
        "error": {"code": "too_many_requests", "message": "Slow down.", "status": 429}
    }


@pytest.mark.parametrize(
    "seconds, retry_after, retry_after_ms",
    [
        (0.0, "1", "0"),  # never "come back in 0 seconds"
        (0.001, "1", "1"),
        (0.25, "1", "250"),
        (0.999, "1", "999"),
        (1.0, "1", "1000"),
        (1.2, "2", "1200"),
        (1.5, "2", "1500"),
        (2.0, "2", "2000"),
        (2.25, "3", "2250"),
        (2.5, "3", "2500"),
        (3.7, "4", "3700"),
        (59.99, "60", "59990"),
        (60.0, "60", "60000"),
    ],
)
def test_retry_after_rounds_up_to_whole_seconds_at_least_one(seconds, retry_after, retry_after_ms):
    headers = too_many_requests("x", seconds).headers
    assert headers == {"Retry-After": retry_after, "retry-after-ms": retry_after_ms}


def test_retry_after_is_never_sooner_than_retry_after_ms():
    for ms in range(0, 10_000, 7):
        headers = too_many_requests("x", ms / 1000).headers
        assert int(headers["Retry-After"]) * 1000 >= int(headers["retry-after-ms"])
        assert int(headers["Retry-After"]) >= 1


@pytest.mark.parametrize(
    "seconds, retry_after, retry_after_ms",
    [(2.0005, "3", "2001"), (2.001, "3", "2001"), (2.01, "3", "2010")],
)
def test_retry_headers_are_a_true_ceiling(seconds, retry_after, retry_after_ms):
    headers = too_many_requests("x", seconds).headers
    assert headers == {"Retry-After": retry_after, "retry-after-ms": retry_after_ms}
