"""Jobs for the scheduler, submitted as bridge.Run submits them, and their events collected.

Used by tests/test_server_batching.py and tests/test_server_batching_review.py, which drive the
real Scheduler on the real Engine in their own process.
"""

from __future__ import annotations

import threading
import time

from phihelpers.server.batching import Job
from phihelpers.server.engine import GenerationParams

STORY = [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]
TIMEOUT = 120  # seconds: a bound for a hang, not a speed figure


class Collected:
    """A job's events, as bridge.Run would receive them."""

    def __init__(self):
        self.events: list[tuple[float, str, object]] = []
        self.done = threading.Event()

    def post(self, kind: str, value) -> None:
        self.events.append((time.monotonic(), kind, value))
        if kind in ("end", "error"):
            self.done.set()

    def kinds(self) -> list[str]:
        return [k for _, k, _ in self.events]

    def text(self) -> str:
        return "".join(v for _, k, v in self.events if k == "piece")

    def when(self, kind: str) -> float:
        return next(t for t, k, _ in self.events if k == kind)


def submit(scheduler, messages=STORY, cancelled=None, choice=None, **params):
    """Submit one job; returns it and what it receives."""
    got = Collected()
    job = Job(messages, GenerationParams(**params), post=got.post, choice=choice)
    if cancelled is not None:
        job.cancelled = cancelled
    scheduler.submit(job)
    return job, got


def wait(*collected: Collected) -> None:
    for got in collected:
        assert got.done.wait(TIMEOUT), f"no end after {TIMEOUT} s: {got.kinds()[-5:]}"


def until(condition, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)
