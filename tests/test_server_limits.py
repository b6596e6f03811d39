"""Unit tests for phihelpers/server/limits.py: the Gate in front of the model.

One model slot, a bounded waiting line, optional per-key limits (concurrent requests, requests
per window), and how long a client turned away is told to wait. Real asyncio, a real Gate, short
windows; no server, no model. The end-to-end counterpart is tests/test_server_overload.py.
"""

from __future__ import annotations

import asyncio
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


# ---------------------------------------------------------------- helpers


def run(coro):
    """Each test gets a fresh event loop; the Gate is built inside it."""
    return asyncio.run(asyncio.wait_for(coro, timeout=10))


async def settle() -> None:
    """Let every task that can run reach its next await."""
    for _ in range(5):
        await asyncio.sleep(0)


async def refused(gate: Gate, key: str) -> ApiError:
    with pytest.raises(ApiError) as info:
        await gate.enter(key)
    return info.value


def assert_429(err: ApiError) -> tuple[int, int]:
    """A 429 with exactly the two retry headers; returns them as (seconds, milliseconds)."""
    assert (err.status, err.code) == (429, "too_many_requests")
    assert set(err.headers) == {"Retry-After", "retry-after-ms"}
    seconds, ms = int(err.headers["Retry-After"]), int(err.headers["retry-after-ms"])
    assert seconds >= 1 and seconds * 1000 >= ms
    return seconds, ms


# ---------------------------------------------------------------- defaults


def test_default_settings():
    lim = LimitSettings()
    assert (lim.max_queue, lim.requests_per_minute, lim.concurrent_per_key) == (8, 0, 0)
    assert lim.window_seconds == 60.0


def test_a_new_gate_is_idle():
    async def main():
        gate = Gate(LimitSettings())
        assert (gate.active, gate.waiting) == (0, 0)

    run(main())


# ---------------------------------------------------------------- the one slot and the queue


def test_one_request_at_a_time_in_the_order_they_came():
    async def main():
        gate = Gate(LimitSettings(max_queue=8))
        order: list[str] = []

        async def request(name: str):
            await gate.enter(name)
            order.append(f"start {name}")
            assert gate.active == 1
            await asyncio.sleep(0.01)
            order.append(f"end {name}")
            gate.leave(name, 0.01)

        await asyncio.gather(*(request(n) for n in "abcd"))
        assert order == [f"{e} {n}" for n in "abcd" for e in ("start", "end")]
        assert (gate.active, gate.waiting) == (0, 0)

    run(main())


def test_enter_on_an_idle_gate_does_not_wait():
    async def main():
        gate = Gate(LimitSettings(max_queue=0))
        await gate.enter("a")  # the queue holds nobody, but nobody has to wait
        assert (gate.active, gate.waiting) == (1, 0)
        gate.leave("a", 1.0)
        assert (gate.active, gate.waiting) == (0, 0)
        await gate.enter("a")  # the slot was given back
        assert gate.active == 1

    run(main())


def test_waiters_are_counted_and_handed_the_slot_in_turn():
    async def main():
        gate = Gate(LimitSettings(max_queue=8))
        await gate.enter("a")
        b = asyncio.create_task(gate.enter("b"))
        c = asyncio.create_task(gate.enter("c"))
        await settle()
        assert (gate.active, gate.waiting) == (1, 2)
        assert not b.done() and not c.done()

        gate.leave("a", 1.0)
        await settle()
        assert b.done() and not c.done()
        assert (gate.active, gate.waiting) == (1, 1)

        gate.leave("b", 1.0)
        await settle()
        assert c.done()
        assert (gate.active, gate.waiting) == (1, 0)
        gate.leave("c", 1.0)
        assert (gate.active, gate.waiting) == (0, 0)

    run(main())


def test_past_max_queue_a_newcomer_gets_429_with_retry_headers():
    async def main():
        gate = Gate(LimitSettings(max_queue=2))
        await gate.enter("a")
        waiters = [asyncio.create_task(gate.enter(k)) for k in ("b", "c")]
        await settle()
        assert gate.waiting == 2

        err = await refused(gate, "d")
        seconds, ms = assert_429(err)
        assert err.message == (
            "The server is busy: one request is generating and 2 are waiting "
            "(the queue holds 2). Retry shortly."
        )
        assert seconds == 2 and 1990 <= ms <= 2000  # one request's duration (2 s at first)
        assert (gate.active, gate.waiting) == (1, 2)  # the refused one left no trace

        for key in ("a", "b"):
            gate.leave(key, 2.0)
            await settle()
        assert all(w.done() for w in waiters)
        assert (gate.active, gate.waiting) == (1, 0)  # c generates; the queue is empty again
        gate.leave("c", 2.0)
        assert (gate.active, gate.waiting) == (0, 0)

    run(main())


def test_max_queue_zero_refuses_anyone_while_one_generates():
    async def main():
        gate = Gate(LimitSettings(max_queue=0))
        await gate.enter("a")
        err = await refused(gate, "b")
        assert_429(err)
        assert "0 are waiting (the queue holds 0)" in err.message
        gate.leave("a", 1.0)
        await gate.enter("b")  # free again

    run(main())


def test_a_place_freed_in_the_queue_is_taken_again():
    async def main():
        gate = Gate(LimitSettings(max_queue=1))
        await gate.enter("a")
        b = asyncio.create_task(gate.enter("b"))
        await settle()
        assert_429(await refused(gate, "c"))
        gate.leave("a", 1.0)
        await settle()
        assert b.done() and gate.waiting == 0
        c = asyncio.create_task(gate.enter("c"))  # the place b left
        await settle()
        assert gate.waiting == 1
        assert_429(await refused(gate, "d"))
        gate.leave("b", 1.0)
        await c
        gate.leave("c", 1.0)

    run(main())


# ---------------------------------------------------------------- per-key concurrency


def test_concurrent_per_key():
    async def main():
        gate = Gate(LimitSettings(concurrent_per_key=2))
        await gate.enter("k")
        second = asyncio.create_task(gate.enter("k"))  # waits for the slot: still counts
        await settle()
        err = await refused(gate, "k")
        seconds, ms = assert_429(err)
        assert err.message == (
            "Too many concurrent requests: at most 2 at a time for this key. "
            "Wait for an answer before sending the next request."
        )
        assert (seconds, ms) == (2, 2000)  # the estimate of one request: 2 s at first

        other = asyncio.create_task(gate.enter("other"))  # another key is not limited
        await settle()
        assert gate.waiting == 2 and not other.done()

        gate.leave("k", 2.0)  # the first answer is done: k has one request left (second)
        await second
        third = asyncio.create_task(gate.enter("k"))  # so one more may join the line
        await settle()
        assert gate.waiting == 2
        assert_429(await refused(gate, "k"))  # and then k is at its 2 again
        gate.leave("k", 2.0)
        await other
        gate.leave("other", 2.0)
        await third
        gate.leave("k", 2.0)
        assert (gate.active, gate.waiting) == (0, 0)

    run(main())


def test_a_key_may_send_again_once_it_has_its_answer():
    async def main():
        gate = Gate(LimitSettings(concurrent_per_key=1))
        await gate.enter("k")
        assert_429(await refused(gate, "k"))
        gate.leave("k", 1.0)
        await gate.enter("k")
        gate.leave("k", 1.0)
        assert (gate.active, gate.waiting) == (0, 0)

    run(main())


# ---------------------------------------------------------------- requests per window


def test_requests_per_window_through_enter():
    async def main():
        gate = Gate(LimitSettings(requests_per_minute=2, window_seconds=0.2))
        for _ in range(2):
            await gate.enter("k")
            gate.leave("k", 0.01)
        err = await refused(gate, "k")
        seconds, ms = assert_429(err)
        assert err.message.startswith(
            "Rate limit reached: 2 requests per 0.2 seconds for this key."
        )
        assert seconds == 1 and 100 <= ms <= 200
        await gate.enter("other")  # its own count
        gate.leave("other", 0.01)
        await asyncio.sleep(ms / 1000 + 0.02)
        await gate.enter("k")  # the window moved on
        gate.leave("k", 0.01)

    run(main())


def test_retry_after_ms_tells_when_the_oldest_request_leaves_the_window():
    async def main():
        gate = Gate(LimitSettings(requests_per_minute=1, window_seconds=0.5))
        await gate.enter("k")
        gate.leave("k", 0.01)
        await asyncio.sleep(0.2)
        _, ms = assert_429(await refused(gate, "k"))
        assert 150 <= ms <= 300  # 0.5 s window, 0.2 s (or a little more) of it gone
        message = (await refused(gate, "k")).message
        said = float(message.split("Retry after ")[1].removesuffix(" seconds."))
        assert 0.1 <= said <= 0.3, message

    run(main())


def test_a_request_refused_by_the_rate_limit_does_not_count():
    """Hammering while limited must not push the key's window further out."""

    async def main():
        gate = Gate(LimitSettings(requests_per_minute=1, window_seconds=0.15))
        await gate.enter("k")
        gate.leave("k", 0.01)
        for _ in range(20):
            assert_429(await refused(gate, "k"))
        await asyncio.sleep(0.17)
        await gate.enter("k")
        gate.leave("k", 0.01)

    run(main())


def test_a_request_turned_away_by_a_full_queue_does_not_count_against_its_key():
    async def main():
        gate = Gate(LimitSettings(max_queue=0, requests_per_minute=1, window_seconds=60))
        await gate.enter("a")
        for _ in range(3):
            err = await refused(gate, "b")
            assert err.message.startswith("The server is busy")
        gate.leave("a", 1.0)
        await gate.enter("b")  # b's one request per minute was not used by the refusals
        gate.leave("b", 1.0)
        err = await refused(gate, "b")
        assert err.message.startswith("Rate limit reached: 1 requests per minute")

    run(main())


def test_a_request_turned_away_by_the_concurrency_limit_does_not_count_against_its_rate():
    async def main():
        gate = Gate(LimitSettings(concurrent_per_key=1, requests_per_minute=2, window_seconds=60))
        await gate.enter("k")  # 1st counted request
        for _ in range(3):
            err = await refused(gate, "k")
            assert err.message.startswith("Too many concurrent requests")
        gate.leave("k", 1.0)
        await gate.enter("k")  # 2nd counted request: allowed
        gate.leave("k", 1.0)
        err = await refused(gate, "k")  # 3rd: over the rate
        assert err.message.startswith("Rate limit reached: 2 requests per minute")

    run(main())


# ---------------------------------------------------------------- come back in ...


def test_turned_away_clients_are_spaced_one_request_duration_apart_in_order():
    async def main():
        gate = Gate(LimitSettings(max_queue=0))
        await gate.enter("a")
        ms = [assert_429(await refused(gate, f"c{i}"))[1] for i in range(5)]
        # 2 s per request at first: come back in about 2, 4, 6, 8, 10 seconds
        for i, value in enumerate(ms, start=1):
            assert 2000 * i - 50 <= value <= 2000 * i, ms
        assert ms == sorted(ms)
        gaps = [b - a for a, b in zip(ms, ms[1:], strict=False)]
        assert all(1950 <= g <= 2001 for g in gaps), gaps
        seconds = [assert_429(await refused(gate, "late"))[0]]
        assert seconds == [12]
        gate.leave("a", 2.0)

    run(main())


def test_the_spacing_follows_the_running_estimate():
    async def main():
        gate = Gate(LimitSettings(max_queue=0))
        await gate.enter("a")
        gate.leave("a", 7.0)  # 0.8 * 2 + 0.2 * 7 = 3 s per request
        await gate.enter("a")
        first = assert_429(await refused(gate, "b"))
        second = assert_429(await refused(gate, "c"))
        assert first[0] == 3 and 2950 <= first[1] <= 3000
        assert second[0] == 6 and 5950 <= second[1] <= 6000
        gate.leave("a", 3.0)

    run(main())


def test_the_spacing_is_at_least_a_quarter_second():
    async def main():
        gate = Gate(LimitSettings(max_queue=0))
        for _ in range(60):  # requests that take no time drive the estimate to ~0
            await gate.enter("a")
            gate.leave("a", 0.0)
        await gate.enter("a")
        ms = [assert_429(await refused(gate, "b"))[1] for _ in range(3)]
        assert [round(v / 250) for v in ms] == [1, 2, 3], ms
        gate.leave("a", 0.0)

    run(main())


def test_promises_already_past_are_not_added_to():
    async def main():
        gate = Gate(LimitSettings(max_queue=0))
        for _ in range(60):
            await gate.enter("a")
            gate.leave("a", 0.0)
        await gate.enter("a")
        assert_429(await refused(gate, "b"))  # told: come back in 0.25 s
        await asyncio.sleep(0.3)  # that moment has passed
        _, ms = assert_429(await refused(gate, "c"))
        assert 240 <= ms <= 250  # one step from now, not from the old promise
        gate.leave("a", 0.0)

    run(main())


# ---------------------------------------------------------------- the running estimate


def test_leave_updates_the_running_estimate_of_one_request():
    async def main():
        gate = Gate(LimitSettings(concurrent_per_key=1))
        await gate.enter("k")

        async def estimate() -> int:
            # the per-key refusal advertises one request's estimated duration, in ms
            return assert_429(await refused(gate, "k"))[1]

        assert await estimate() == 2000  # the starting guess
        gate.leave("k", 12.0)  # 0.8 * 2 + 0.2 * 12 = 4
        await gate.enter("k")
        assert await estimate() == 4000
        gate.leave("k", 4.0)  # unchanged
        await gate.enter("k")
        assert await estimate() == 4000
        gate.leave("k", 0.0)  # 3.2
        await gate.enter("k")
        assert await estimate() == 3200
        for _ in range(40):
            gate.leave("k", 0.0)
            await gate.enter("k")
        assert await estimate() == 500  # never less than half a second
        gate.leave("k", 0.0)

    run(main())


# ---------------------------------------------------------------- cancellation


def test_a_cancelled_waiter_gives_back_its_place_and_its_key_count():
    async def main():
        gate = Gate(LimitSettings(max_queue=1, concurrent_per_key=1))
        await gate.enter("a")
        b = asyncio.create_task(gate.enter("b"))
        await settle()
        assert gate.waiting == 1
        assert_429(await refused(gate, "c"))  # the queue is full

        b.cancel()
        with pytest.raises(asyncio.CancelledError):
            await b
        assert (gate.active, gate.waiting) == (1, 0)

        again = asyncio.create_task(gate.enter("b"))  # b's count is back to 0 and a place is free
        await settle()
        assert gate.waiting == 1 and not again.done()
        gate.leave("a", 1.0)
        await again
        assert (gate.active, gate.waiting) == (1, 0)
        gate.leave("b", 1.0)
        assert (gate.active, gate.waiting) == (0, 0)

    run(main())


def test_a_cancelled_waiter_frees_its_key_for_a_new_request():
    async def main():
        gate = Gate(LimitSettings(concurrent_per_key=1))
        await gate.enter("a")
        b = asyncio.create_task(gate.enter("b"))
        await settle()
        assert_429(await refused(gate, "b"))  # b already has one request in the line
        b.cancel()
        await asyncio.gather(b, return_exceptions=True)
        c = asyncio.create_task(gate.enter("b"))  # allowed again
        await settle()
        assert not c.done() and gate.waiting == 1
        gate.leave("a", 1.0)
        await c
        gate.leave("b", 1.0)

    run(main())


def test_the_slot_is_not_lost_when_a_waiter_in_the_middle_is_cancelled():
    async def main():
        gate = Gate(LimitSettings())
        await gate.enter("a")
        b = asyncio.create_task(gate.enter("b"))
        c = asyncio.create_task(gate.enter("c"))
        await settle()
        b.cancel()
        await asyncio.gather(b, return_exceptions=True)
        assert gate.waiting == 1
        gate.leave("a", 1.0)
        await c
        assert (gate.active, gate.waiting) == (1, 0)
        gate.leave("c", 1.0)
        await gate.enter("d")  # and still one slot, not two
        e = asyncio.create_task(gate.enter("e"))
        await settle()
        assert not e.done() and gate.active == 1
        gate.leave("d", 1.0)
        await e
        gate.leave("e", 1.0)

    run(main())


def test_a_waiter_cancelled_just_after_being_handed_the_slot_passes_it_on():
    """The slot was given to b (a left), but b is cancelled before it runs: c must get it."""

    async def main():
        gate = Gate(LimitSettings(concurrent_per_key=1))
        await gate.enter("a")
        b = asyncio.create_task(gate.enter("b"))
        c = asyncio.create_task(gate.enter("c"))
        await settle()
        gate.leave("a", 1.0)  # wakes b...
        b.cancel()  # ...which is cancelled before it gets to run
        await asyncio.gather(b, return_exceptions=True)
        assert b.cancelled()
        await c
        assert (gate.active, gate.waiting) == (1, 0)
        b2 = asyncio.create_task(gate.enter("b"))  # b's per-key count was given back
        await settle()
        assert not b2.done() and gate.waiting == 1
        gate.leave("c", 1.0)
        await b2
        gate.leave("b", 1.0)
        assert (gate.active, gate.waiting) == (0, 0)

    run(main())
