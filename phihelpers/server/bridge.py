"""The bridge between the engine thread and the event loop: one generation, read token by token.

llama.cpp generates on a single worker thread (the model is not thread-safe); each request's
route awaits a `Run`, which queues for the model (the Gate), starts the generation on that
thread, and hands its text to the event loop as it comes. A client that goes away, or a server
that shuts down, sets `cancelled`, and the engine stops at the next token (or mid-prompt).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from starlette.requests import Request

from .engine import GenerationParams, PromptError, Usage
from .errors import ApiError, bad_request
from .models import ModelChoice

log = logging.getLogger("phihelpers.server")

# At most this often the engine thread wakes the event loop with new text (see Run._hand_over).
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
    """One generation on the engine thread, read from the event loop token by token.

    `state` is the app's state: `gate` (admission), `models` (the registry), `executor` (the
    one engine thread), `runs` (generations in progress) and `closing` (an asyncio.Event).
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
    def _work(self, loop: asyncio.AbstractEventLoop) -> None:
        put = self.queue.put_nowait
        began = time.perf_counter()  # not counting the wait in the queue
        try:
            engine = self.state.models.activate(self.choice)  # loads it if another is loaded
            gen = engine.generate(self.messages, self.params, cancelled=lambda: self.cancelled)
            self.usage = gen.usage
            loop.call_soon_threadsafe(put, ("ready", None))
            self._hand_over(loop, gen.pieces)
            self.finish_reason = gen.finish_reason
            if self.cancelled:
                log.info(
                    "generation stopped after %d tokens: %s",
                    gen.usage.completion_tokens,
                    "shutting down" if self.state.closing.is_set() else "the client went away",
                )
            loop.call_soon_threadsafe(put, ("end", None))
        except BaseException as exc:  # handed to the event loop, which answers for it
            with contextlib.suppress(RuntimeError):  # the loop is closed: shutting down
                loop.call_soon_threadsafe(put, ("error", exc))
        finally:
            seconds = time.perf_counter() - began
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self.state.gate.leave, self.key, seconds)
                loop.call_soon_threadsafe(self.state.runs.discard, self)

    def _hand_over(self, loop: asyncio.AbstractEventLoop, pieces) -> None:
        """Pass the text to the event loop, waking it at most once per HAND_OVER_SECONDS.

        Each wake-up (a write to the loop's self-pipe, a thread switch, an SSE chunk, the
        client parsing it) takes CPU from the model's own threads on a small machine. The
        first piece goes at once (time to first token); later pieces that arrive within the
        interval travel together in one chunk, so a piece waits at most one token's time.
        """
        waiting: collections.deque[str] = collections.deque()  # append/popleft: thread-safe

        def deliver() -> None:  # on the event loop
            parts = []
            while waiting:
                parts.append(waiting.popleft())
            if parts:
                self.queue.put_nowait(("piece", "".join(parts)))

        last_wake = float("-inf")
        try:
            for piece in pieces:
                waiting.append(piece)
                now = time.perf_counter()
                if now - last_wake >= HAND_OVER_SECONDS:
                    last_wake = now
                    loop.call_soon_threadsafe(deliver)
                if self.cancelled:
                    break
        finally:  # what is left goes before the "end" (or "error") that follows
            with contextlib.suppress(RuntimeError):  # the loop is closed: shutting down
                loop.call_soon_threadsafe(deliver)

    # -- on the event loop ------------------------------------------------------------------
    async def start(self) -> None:
        """Queue for the model, start generating, and wait until the prompt is accepted."""
        await self.state.gate.enter(self.key)
        loop = asyncio.get_running_loop()
        try:
            self.state.runs.add(self)
            loop.run_in_executor(self.state.executor, self._work, loop)
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
    """Run `work()` on the engine thread in its turn (through the Gate, like a generation):
    embeddings share the model slot and the limits with chat."""
    await state.gate.enter(key)
    began = time.perf_counter()
    try:
        return await asyncio.get_running_loop().run_in_executor(state.executor, work)
    except (ApiError, PromptError, ValueError) as exc:
        raise as_api_error(exc) from None
    finally:
        state.gate.leave(key, time.perf_counter() - began)
