"""Admission control in front of the model: a bounded queue and an optional per-key rate limit.

The model answers `slots` requests at a time (decoded together: batching.py). More requests
wait in a queue of bounded length; past it,
the server answers 429 with Retry-After (seconds) and retry-after-ms, which azure-core and
openai-python both honour, so their own retries get through. An optional per-key limit
(requests per minute, concurrent requests) reproduces the old GitHub Models free tier.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict, deque
from dataclasses import dataclass

from .errors import too_many_requests


@dataclass
class LimitSettings:
    max_queue: int = 8  # requests allowed to wait while every slot is answering
    slots: int = 1  # requests answered at once (the engine's parallel sequences)
    requests_per_minute: int = 0  # per key and window; 0 = no limit
    concurrent_per_key: int = 0  # per key; 0 = no limit
    window_seconds: float = 60.0  # the window requests_per_minute counts in (short for lessons)


class Gate:
    """The model's slots plus a bounded waiting line; estimates how long a newcomer would wait."""

    def __init__(self, limits: LimitSettings):
        self.limits = limits
        self._slot = asyncio.Semaphore(max(1, limits.slots))
        self.waiting = 0
        self.active = 0
        self._avg_seconds = 2.0  # running estimate of one request's duration
        self._promised_until = 0.0  # when the last client turned away was told to come back
        self._per_key_active: dict[str, int] = defaultdict(int)
        self._per_key_times: dict[str, deque[float]] = defaultdict(deque)

    def _estimate(self, ahead: int) -> float:
        return max(0.5, self._avg_seconds * max(1, ahead))

    def _come_back_in(self) -> float:
        """Seconds a client turned away from a full queue should wait before retrying.

        A place in the queue frees up about once per request's duration divided by the slots.
        Clients turned away together are told to come back that far apart, in the order they
        came, so their retries arrive at the pace places free up instead of all at once.
        """
        now = time.monotonic()
        step = max(0.25, self._avg_seconds / max(1, self.limits.slots))
        self._promised_until = max(now, self._promised_until) + step
        return self._promised_until - now

    def check_key(self, key: str) -> None:
        """Per-key limits, checked before a request joins the queue. A request turned away
        here (or because the queue is full) does not count against the key's rate."""
        lim = self.limits
        if lim.concurrent_per_key and self._per_key_active[key] >= lim.concurrent_per_key:
            raise too_many_requests(
                f"Too many concurrent requests: at most {lim.concurrent_per_key} at a time for "
                "this key. Wait for an answer before sending the next request.",
                self._estimate(1),
            )
        if lim.requests_per_minute:
            now = time.monotonic()
            times = self._per_key_times[key]
            window = lim.window_seconds
            while times and now - times[0] >= window:
                times.popleft()
            if len(times) >= lim.requests_per_minute:
                wait = window - (now - times[0])
                per = "minute" if window == 60 else f"{window:g} seconds"
                raise too_many_requests(
                    f"Rate limit reached: {lim.requests_per_minute} requests per {per} for this "
                    f"key. Retry after {wait:.1f} seconds.",
                    wait,
                )
            times.append(now)

    async def enter(self, key: str) -> None:
        if self._slot.locked() and self.waiting >= self.limits.max_queue:
            raise too_many_requests(
                f"The server is busy: {self._taken()} and {self.waiting} are waiting (the "
                f"queue holds {self.limits.max_queue}). Retry shortly.",
                self._come_back_in(),
            )
        self.check_key(key)
        self._per_key_active[key] += 1
        self.waiting += 1
        try:
            await self._slot.acquire()
        except BaseException:
            self._per_key_active[key] -= 1
            raise
        finally:
            self.waiting -= 1
        self.active += 1

    def _taken(self) -> str:
        slots = self.limits.slots
        return "one request is generating" if slots == 1 else f"all {slots} answer slots are taken"

    def leave(self, key: str, seconds: float) -> None:
        self.active -= 1
        self._per_key_active[key] -= 1
        if self._per_key_active[key] <= 0:
            self._per_key_active.pop(key, None)
        self._avg_seconds = 0.8 * self._avg_seconds + 0.2 * seconds
        self._slot.release()
