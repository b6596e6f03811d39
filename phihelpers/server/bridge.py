"""The bridge between the engine thread and the event loop: one answer, read token by token.

llama.cpp generates on a single thread, the scheduler's (batching.py), which decodes every
running answer together; each request's route awaits a `Run`, which queues for a slot (the
Gate), hands the request to the scheduler as a Job, and passes its text to the event loop as it
comes. A client that goes away, or a server that shuts down, sets `cancelled`, and the
scheduler ends that answer at the next step (or mid-prompt), leaving the others running.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from starlette.requests import Request

from .batching import Job
from .engine import GenerationParams, PromptError, Usage
from .errors import ApiError, bad_request
from .models import ModelChoice

log = logging.getLogger("phihelpers.server")

# At most this often the engine thread wakes the event loop with new text (see Run._poster).
HAND_OVER_SECONDS = 0.02


def shutting_down() -> ApiError:
    return ApiError(
        503, "server_shutting_down", "The server is shutting down; this answer was not finished."
    )


def as_api_error(exc: BaseException) -> ApiError:
    """What the client is told about an exception from the engine thread."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, PromptError):
        return bad_request(str(exc), exc.code)
    if isinstance(exc, ValueError):
        return bad_request(str(exc))
    log.exception("generation failed", exc_info=exc)
    return ApiError(
        500, "internal_error", "The model failed to generate an answer; see the server log."
    )


class Run:
    """One chat answer from the scheduler's engine thread, read on the event loop.

    `state` is the app's state: `gate` (admission), `scheduler` (batching.Scheduler: the engine
    thread), `runs` (answers in progress) and `closing` (an asyncio.Event).
    """

    def __init__(
        self,
        state,
        messages: list[dict],
        params: GenerationParams,
        key: str,
        choice: ModelChoice | None = None,
    ):
        self.state = state
        self.messages = messages
        self.params = params
        self.key = key
        self.choice = choice  # None: the server's default model
        self.cancelled = False
        self.usage = Usage()
        self.finish_reason: str | None = None
        self.queue: asyncio.Queue = asyncio.Queue()
        self.failure: ApiError | None = None  # why it ended early, after the status line

    # -- on the engine thread ---------------------------------------------------------------
    def _poster(self, loop: asyncio.AbstractEventLoop, job: Job, began: float):
        """The job's `post`: hands events to the event loop, waking it at most once per
        HAND_OVER_SECONDS for text.

        Each wake-up (a write to the loop's self-pipe, a thread switch, an SSE chunk, the
        client parsing it) takes CPU from the model's own threads on a small machine. The
        first piece goes at once (time to first token); later pieces that arrive within the
        interval travel together in one chunk (or go when the scheduler flushes them after
        its step); "ready", "end" and "error" go at once.
        """
        waiting: collections.deque = collections.deque()  # append/popleft: thread-safe
        last_wake = [float("-inf")]

        def deliver() -> None:  # on the event loop
            parts: list[str] = []
            while waiting:
                kind, value = waiting.popleft()
                if kind == "piece":
                    parts.append(value)
                    continue
                if parts:
                    self.queue.put_nowait(("piece", "".join(parts)))
                    parts = []
                self.queue.put_nowait((kind, value))
            if parts:
                self.queue.put_nowait(("piece", "".join(parts)))

        def done() -> None:  # on the event loop
            self.state.gate.leave(self.key, time.perf_counter() - began)
            self.state.runs.discard(self)

        def post(kind: str, value) -> None:
            if kind in ("end", "error"):
                self.usage, self.finish_reason = job.usage, job.finish_reason
                if kind == "end" and self.cancelled:
                    log.info(
                        "generation stopped after %d tokens: %s",
                        job.usage.completion_tokens,
                        "shutting down" if self.state.closing.is_set() else "the client went away",
                    )
            waiting.append((kind, value))
            wake(urgent=kind != "piece", finished=kind in ("end", "error"))

        def wake(urgent: bool, finished: bool = False) -> None:
            now = time.perf_counter()
            if urgent or now - last_wake[0] >= HAND_OVER_SECONDS:
                last_wake[0] = now
                with contextlib.suppress(RuntimeError):  # the loop is closed: shutting down
                    loop.call_soon_threadsafe(deliver)
                    if finished:
                        loop.call_soon_threadsafe(done)

        def flush(now: bool = False) -> None:
            """Text held back by the interval goes once it is due (or `now`): the scheduler
            calls this after each step, and before work that pauses the steps."""
            if waiting:
                wake(urgent=now)

        job.flush = flush
        return post

    # -- on the event loop ------------------------------------------------------------------
    async def start(self) -> None:
        """Read the prompt, queue for a slot, start generating, and wait until it has one.

        The prompt is templated and tokenized first, on a worker thread, if its model is the
        one loaded: a prompt that cannot be served (too long, a grammar llama.cpp refuses) is
        refused before it queues, and the engine thread does not stall the running answers
        for it. (For a model that has to be loaded first, the engine thread does it.)"""
        engine = self.state.models.loaded(self.choice)
        prompt = None
        if engine is not None:
            try:
                prompt = await asyncio.to_thread(
                    engine.prepare, self.messages, self.params, lambda: self.cancelled
                )
            except (PromptError, ValueError) as exc:
                raise as_api_error(exc) from None
        await self.state.gate.enter(self.key)
        loop = asyncio.get_running_loop()
        job = Job(self.messages, self.params, post=lambda *_: None, choice=self.choice)
        job.prompt, job.prepared_by = prompt, engine.serial if engine else None
        del engine  # a queued job must not keep a model alive that is about to be replaced
        job.cancelled = lambda: self.cancelled
        job.post = self._poster(loop, job, time.perf_counter())  # not counting the wait
        try:
            self.state.runs.add(self)
            self.state.scheduler.submit(job)
        except BaseException:
            self.state.runs.discard(self)
            self.state.gate.leave(self.key, 0.0)
            raise
        kind, value = await self._next()
        if kind == "error":
            raise as_api_error(value)

    async def _next(self):
        try:
            return await self.queue.get()
        except BaseException:
            self.cancelled = True
            raise

    async def text(self) -> str:
        return "".join([piece async for piece in self.pieces()])

    async def pieces(self) -> AsyncIterator[str]:
        try:
            while True:
                kind, value = await self._next()
                if kind == "piece":
                    yield value
                elif kind == "end":
                    if self.cancelled and self.state.closing.is_set():
                        self.failure = shutting_down()
                    return
                else:  # an error after the first token
                    log.error("generation failed mid-way: %r", value)
                    self.failure = as_api_error(value)
                    return
        finally:
            self.cancelled = True  # a client that went away stops the generation at once


async def until_disconnected(request: Request) -> None:
    """Returns when the client hangs up (call it only once the body has been read)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(request: Request, run: Run, awaitable):
    """Await `awaitable` (waiting in the queue, generating an unstreamed answer), but stop the
    run and give up the model slot as soon as the client goes away or the server stops."""
    closing_event = run.state.closing
    work = asyncio.ensure_future(awaitable)
    gone = asyncio.ensure_future(until_disconnected(request))
    closing = asyncio.ensure_future(closing_event.wait())
    try:
        await asyncio.wait({work, gone, closing}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        work.cancel()
        raise
    finally:
        gone.cancel()
        closing.cancel()
    if not work.done():
        run.cancelled = True
        work.cancel()
        with contextlib.suppress(BaseException):
            await work
        if closing_event.is_set():
            raise shutting_down()
        log.info("the client went away while waiting for its answer")
        raise ApiError(499, "client_closed_request", "The client closed the connection.")
    return work.result()


async def on_engine(state, key: str, work):
    """Run `work()` on the engine thread between two decoding steps, in its turn (through the
    Gate, like an answer): embeddings share the slots and the limits with chat."""
    await state.gate.enter(key)
    began = time.perf_counter()
    try:
        return await asyncio.wrap_future(state.scheduler.call(work))
    except (ApiError, PromptError, ValueError) as exc:
        raise as_api_error(exc) from None
    finally:
        state.gate.leave(key, time.perf_counter() - began)
