"""phihelpers.server.bridge: one answer from the engine thread, read on the event loop.

A stub scheduler stands in for batching.Scheduler and llama.cpp here (the bridge's job is the
hand-over, the queueing and the cancellation, not the model): it answers each Job on a thread
of its own with the same events the real scheduler posts. The real scheduler and engine go
through the same Run in every end-to-end suite (and tests/test_server_batching.py).
"""

from __future__ import annotations

import asyncio
import threading
import time
from types import SimpleNamespace

import pytest

from phihelpers.server.bridge import Run
from phihelpers.server.engine import GenerationParams, PromptError, Usage
from phihelpers.server.errors import ApiError
from phihelpers.server.limits import Gate, LimitSettings


class StubScheduler:
    """Posts `pieces` (sleeping `delay` s before each) to each job, or fails as told."""

    def __init__(self, pieces=("Hel", "lo", "!"), delay=0.0, fail_at=None, prompt_error=None):
        self.pieces, self.delay, self.fail_at, self.prompt_error = (
            pieces,
            delay,
            fail_at,
            prompt_error,
        )
        self.produced = 0

    def submit(self, job) -> None:
        threading.Thread(target=self._answer, args=(job,), daemon=True).start()

    def _answer(self, job) -> None:
        if self.prompt_error:
            job.post("error", self.prompt_error)
            return
        job.usage = Usage(prompt_tokens=len(job.messages) * 10)
        job.post("ready", None)
        for i, piece in enumerate(self.pieces):
            if job.cancelled():
                job.finish_reason = "stop"
                job.post("end", None)
                return
            if i == self.fail_at:
                job.post("error", RuntimeError("llama_decode returned -1"))
                return
            time.sleep(self.delay)
            job.usage.completion_tokens += 1
            self.produced += 1
            job.post("piece", piece)
        job.finish_reason = "length"
        job.post("end", None)


def app_state(scheduler: StubScheduler, **limits) -> SimpleNamespace:
    return SimpleNamespace(
        gate=Gate(LimitSettings(**limits)),
        scheduler=scheduler,
        models=SimpleNamespace(loaded=lambda choice: None),  # prompts read by the scheduler
        runs=set(),
        closing=asyncio.Event(),
    )


def new_run(state, key="k") -> Run:
    return Run(state, [{"role": "user", "content": "hi"}], GenerationParams(max_tokens=8), key)


async def settle(state) -> None:
    """Let the engine thread's last call_soon_threadsafe callbacks run."""
    for _ in range(50):
        if not state.runs and state.gate.active == 0:
            return
        await asyncio.sleep(0.01)


def test_text_usage_and_finish_reason_arrive_and_the_slot_is_given_back():
    async def main():
        state = app_state(StubScheduler(delay=0.02))
        run = new_run(state)
        await run.start()
        assert state.gate.active == 1 and run in state.runs
        text = await run.text()
        await settle(state)
        return run, text, state

    run, text, state = asyncio.run(main())
    assert text == "Hello!"
    assert run.finish_reason == "length" and run.failure is None
    usage = run.usage.as_dict()
    assert usage["prompt_tokens"] == 10 and usage["completion_tokens"] == 3
    assert usage["total_tokens"] == 13
    assert state.gate.active == 0 and not state.runs


def test_a_prompt_the_engine_refuses_is_a_400_before_any_text():
    async def main():
        error = PromptError("The prompt is 9000 tokens", code="context_length_exceeded")
        state = app_state(StubScheduler(prompt_error=error))
        with pytest.raises(ApiError) as caught:
            await new_run(state).start()
        await settle(state)
        return caught.value, state

    err, state = asyncio.run(main())
    assert (err.status, err.code) == (400, "context_length_exceeded")
    assert state.gate.active == 0  # refused, and the model is free again


def test_a_failure_after_the_first_token_ends_the_text_and_is_recorded():
    async def main():
        state = app_state(StubScheduler(fail_at=2))
        run = new_run(state)
        await run.start()
        pieces = [p async for p in run.pieces()]
        await settle(state)
        return run, pieces, state

    run, pieces, state = asyncio.run(main())
    assert "".join(pieces) == "Hello"
    assert run.failure is not None and (run.failure.status, run.failure.code) == (
        500,
        "internal_error",
    )
    assert state.gate.active == 0


def test_a_reader_that_stops_early_stops_the_engine():
    scheduler = StubScheduler(pieces=tuple("abcdefghijklmnopqrstuvwxyz"), delay=0.01)

    async def main():
        state = app_state(scheduler)
        run = new_run(state)
        await run.start()
        stream = run.pieces()
        await stream.__anext__()
        await stream.aclose()  # the client went away
        await settle(state)  # the engine thread left the model slot...
        produced = scheduler.produced
        await asyncio.sleep(0.1)
        assert scheduler.produced == produced  # ...and asks for no more tokens
        return run, state

    run, state = asyncio.run(main())
    assert run.cancelled
    assert scheduler.produced < 26
    assert state.gate.active == 0 and not state.runs


def test_a_run_cancelled_by_the_shutdown_ends_with_503():
    scheduler = StubScheduler(pieces=tuple("abcdefghij"), delay=0.02)

    async def main():
        state = app_state(scheduler)
        run = new_run(state)
        await run.start()
        state.closing.set()
        run.cancelled = True  # what app.state.begin_shutdown() does to every run
        await run.text()
        await settle(state)
        return run

    run = asyncio.run(main())
    assert run.failure is not None and (run.failure.status, run.failure.code) == (
        503,
        "server_shutting_down",
    )


def test_quick_pieces_travel_together_but_none_is_lost():
    scheduler = StubScheduler(
        pieces=tuple(f"{i}," for i in range(200))
    )  # no delay: faster than 20 ms

    async def main():
        state = app_state(scheduler)
        run = new_run(state)
        await run.start()
        return [p async for p in run.pieces()]

    chunks = asyncio.run(main())
    assert "".join(chunks) == "".join(f"{i}," for i in range(200))
    assert len(chunks) < 200  # several pieces per wake-up of the event loop


def test_a_second_run_waits_for_the_first_to_leave_the_slot():
    scheduler = StubScheduler(pieces=("a", "b", "c"), delay=0.02)

    async def main():
        state = app_state(scheduler, max_queue=1)
        first, second = new_run(state, "one"), new_run(state, "two")
        await first.start()
        waiting = asyncio.ensure_future(second.start())
        await asyncio.sleep(0.05)
        assert not waiting.done() and state.gate.waiting == 1
        assert await first.text() == "abc"
        await waiting
        assert await second.text() == "abc"
        await settle(state)
        return state

    state = asyncio.run(main())
    assert state.gate.active == 0 and state.gate.waiting == 0
