"""Gate's per-key rate limit counts requests in a window (60 s, or shorter for lessons)."""

from __future__ import annotations

import time

import pytest

from phihelpers.server.errors import ApiError
from phihelpers.server.limits import Gate, LimitSettings


def test_default_window_is_a_minute():
    gate = Gate(LimitSettings(requests_per_minute=1))
    gate.check_key("a")
    with pytest.raises(ApiError) as info:
        gate.check_key("a")
    assert info.value.status == 429
    assert "per minute" in info.value.message
    assert 55 <= int(info.value.headers["Retry-After"]) <= 60
    gate.check_key("b")  # another key has its own count


def test_short_window_frees_up_after_it_passes():
    gate = Gate(LimitSettings(requests_per_minute=2, window_seconds=0.3))
    gate.check_key("a")
    gate.check_key("a")
    with pytest.raises(ApiError) as info:
        gate.check_key("a")
    assert "2 requests per 0.3 seconds" in info.value.message
    assert int(info.value.headers["retry-after-ms"]) <= 300
    time.sleep(0.35)
    gate.check_key("a")  # the window moved on: allowed again
