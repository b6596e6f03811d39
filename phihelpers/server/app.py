"""The local model server's routes: the Azure AI Model Inference API and the OpenAI-compatible one.

    POST /chat/completions?api-version=...    azure-ai-inference (what the seed's code calls)
    GET  /info                                client.get_model_info()
    POST /v1/chat/completions, GET /v1/models the openai SDK, curl, LangChain, ...
    POST /models/chat/completions, GET /models/info   the Azure AI Foundry endpoint shape
    GET  /health                              readiness (no key needed)

Everything is validated before the first byte is sent, so a bad request gets a 4xx in the
{"error": {"code", "message"}} shape, never a 200 stream cut short.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from .engine import Engine, GenerationParams, PromptError, Usage, new_completion_id
from .errors import ApiError, bad_request, error_response
from .limits import Gate, LimitSettings
from .models import ModelChoice, ModelRegistry
from .schema import ChatRequest, describe

log = logging.getLogger("phihelpers.server")

ROUTES_HELP = (
    "This server answers POST /chat/completions (Azure AI Model Inference API), "
    "POST /v1/chat/completions (OpenAI-compatible), GET /info and GET /v1/models."
)


@dataclass
class ServerOptions:
    api_key: str = field(default="", repr=False)
    max_body_bytes: int = 1_000_000
    limits: LimitSettings = field(default_factory=LimitSettings)
    log_prompts: bool = False
    cors_origins: list[str] = field(default_factory=list)
    # Lesson 07: a user message containing this phrase is refused the way Azure's filter does.
    content_filter_phrase: str = ""
    # A request that sets no max_tokens gets at most this many (hosted services cap too): a
    # small model that never says "stop" would otherwise fill the whole context window.
    default_max_tokens: int = 1024


def _sse(data: dict | str) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {payload}\n\n".encode()


# At most this often the engine thread wakes the event loop with new text (see Run._hand_over).
HAND_OVER_SECONDS = 0.02


class Run:
    """One generation on the engine thread, read from the event loop token by token."""

    _END = object()

    def __init__(self, app: FastAPI, request: ChatRequest, params: GenerationParams, key: str):
        self.app = app
        self.state = app.state
        self.request = request
        self.params = params
        self.key = key
        self.cancelled = False
        self.usage = Usage()
        self.finish_reason: str | None = None
        self.queue: asyncio.Queue = asyncio.Queue()
        self.failure: ApiError | None = None  # why it ended early, after the status line
        self.choice: ModelChoice | None = None  # None: the server's default model

    def _work(self, loop: asyncio.AbstractEventLoop) -> None:
        put = self.queue.put_nowait
        began = time.perf_counter()  # not counting the wait in the queue
        try:
            engine = self.state.models.activate(self.choice)  # loads it here if another is loaded
            gen = engine.generate(
                self.request.prompt_messages(), self.params, cancelled=lambda: self.cancelled
            )
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
            raise _as_api_error(value)

    async def _next(self):
        try:
            return await self.queue.get()
        except BaseException:
            self.cancelled = True
            raise

    async def text(self) -> list[str]:
        return [piece async for piece in self.pieces()]

    async def pieces(self) -> AsyncIterator[str]:
        try:
            while True:
                kind, value = await self._next()
                if kind == "piece":
                    yield value
                elif kind == "end":
                    if self.cancelled and self.state.closing.is_set():
                        self.failure = _shutting_down()
                    return
                else:  # an error after the first token
                    log.error("generation failed mid-way: %r", value)
                    self.failure = _as_api_error(value)
                    return
        finally:
            self.cancelled = True  # a client that went away stops the generation at once


def _shutting_down() -> ApiError:
    return ApiError(
        503, "server_shutting_down", "The server is shutting down; this answer was not finished."
    )


def _as_api_error(exc: BaseException) -> ApiError:
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


def _presented_key(request: Request) -> str:
    auth = request.headers.get("authorization", "")
    given = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
    return given or request.headers.get("api-key", "").strip()


def _check_key(request: Request, expected: str) -> str:
    """Checks the key (if the server has one) and returns who is asking, for per-key limits.

    Both `Authorization: Bearer` and `api-key` are accepted; compared in constant time. The
    identity is a hash of the presented key (never the key), or the client address.
    """
    given = _presented_key(request)
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


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "payload_too_large", f"The request body is larger than {limit} bytes.")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(
                413, "payload_too_large", f"The request body is larger than {limit} bytes."
            )
    return bytes(body)


def _check_content_type(request: Request) -> None:
    """A body sent as something other than JSON (curl -d without -H) is refused, clearly."""
    mime = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if mime and mime != "application/json" and not mime.endswith("+json"):
        raise ApiError(
            415,
            "unsupported_media_type",
            f"The request body is sent as '{mime}', but this API takes JSON: send it with the "
            "header 'Content-Type: application/json'.",
        )


async def _until_disconnected(request: Request) -> None:
    """Returns when the client hangs up (call it only once the body has been read)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _unless_disconnected(request: Request, run: Run, awaitable):
    """Await `awaitable` (waiting in the queue, generating an unstreamed answer), but stop the
    run and give up the model slot as soon as the client goes away or the server stops."""
    work = asyncio.ensure_future(awaitable)
    gone = asyncio.ensure_future(_until_disconnected(request))
    closing = asyncio.ensure_future(request.app.state.closing.wait())
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
        if request.app.state.closing.is_set():
            raise _shutting_down()
        log.info("the client went away while waiting for its answer")
        raise ApiError(499, "client_closed_request", "The client closed the connection.")
    return work.result()


def _params(req: ChatRequest, n_ctx: int, default_max_tokens: int) -> GenerationParams:
    max_tokens = req.max_completion_tokens or req.max_tokens
    if max_tokens is None:
        max_tokens = default_max_tokens
    elif max_tokens > n_ctx:
        raise bad_request(
            f"max_tokens={max_tokens} is more than this model's whole context window "
            f"({n_ctx} tokens). Ask for fewer tokens."
        )
    try:
        stop = req.stop_list()
        req.prompt_messages()
    except ValueError as exc:
        raise bad_request(str(exc)) from None
    if req.tools:
        raise bad_request("Tool calling is not supported by the local server; send messages only.")
    return GenerationParams(
        max_tokens=max_tokens,
        temperature=0.8 if req.temperature is None else req.temperature,
        top_p=0.95 if req.top_p is None else req.top_p,
        stop=stop,
        seed=req.seed,
        presence_penalty=req.presence_penalty or 0.0,
        frequency_penalty=req.frequency_penalty or 0.0,
    )


def create_app(
    engine: Engine,
    options: ServerOptions | None = None,
    on_start: Callable[[], None] | None = None,
    on_stop: Callable[[], None] | None = None,
    models: ModelRegistry | None = None,
) -> FastAPI:
    options = options or ServerOptions()
    registry = models or ModelRegistry.for_engine(engine)  # which GGUF answers which `model`

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        if on_start:
            on_start()
        try:
            yield
        finally:
            app.state.executor.shutdown(wait=False, cancel_futures=True)
            if on_stop:
                on_stop()

    app = FastAPI(
        lifespan=lifespan,
        title="phihelpers local model server",
        description="Azure AI Model Inference API and OpenAI-compatible chat completions, "
        "served by llama.cpp.",
        version="0.1.0",
    )
    app.state.engine = engine
    app.state.models = registry
    app.state.options = options
    app.state.gate = Gate(options.limits)
    app.state.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="phi-engine")
    app.state.runs = set()  # generations in progress
    app.state.closing = asyncio.Event()

    def begin_shutdown() -> None:
        """The server was told to stop: end generations now, answer the queue with 503."""
        app.state.closing.set()
        for run in list(app.state.runs):
            run.cancelled = True

    app.state.begin_shutdown = begin_shutdown

    class QuietForcedShutdown:
        """When uvicorn's graceful-shutdown timeout runs out it cancels what still runs (a
        prompt that took longer to read than the timeout): one log line, not a traceback."""

        def __init__(self, asgi):
            self.asgi = asgi

        async def __call__(self, scope, receive, send):
            try:
                await self.asgi(scope, receive, send)
            except asyncio.CancelledError:
                if not app.state.closing.is_set():
                    raise
                log.info("%s %s cut short by the shutdown", scope.get("method"), scope["path"])

    app.add_middleware(QuietForcedShutdown)

    if options.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=options.cors_origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["*"],
        )

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError):
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 404:
            return error_response(
                404, "not_found", f"No route {request.method} {request.url.path}. {ROUTES_HELP}"
            )
        if exc.status_code == 405:
            allowed = sorted(
                {m for r in app.routes if getattr(r, "path", None) == request.url.path
                 for m in getattr(r, "methods", None) or ()}
            )  # fmt: skip
            return error_response(
                405,
                "method_not_allowed",
                f"{request.method} is not allowed on {request.url.path} (allowed: "
                f"{', '.join(allowed)}). {ROUTES_HELP}",
                headers={**(exc.headers or {}), "Allow": ", ".join(allowed)},
            )
        return error_response(exc.status_code, "http_error", str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError):
        return error_response(400, "invalid_request", str(exc.errors()[:3]))

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception):
        log.exception("unexpected error", exc_info=exc)
        return error_response(500, "internal_error", "Unexpected server error; see the server log.")

    def info() -> dict:
        return registry.info()

    async def chat(request: Request):
        key = _check_key(request, options.api_key)
        _check_content_type(request)
        body = await _read_body(request, options.max_body_bytes)
        try:
            req = ChatRequest.model_validate_json(body)
        except ValidationError as exc:
            raise bad_request(describe(exc)) from None
        choice = registry.resolve(req.model)  # 404 model_not_found if in the catalog, not pulled
        params = _params(req, choice.n_ctx, options.default_max_tokens)
        if options.log_prompts:
            log.info("prompt: %s", json.dumps(req.prompt_messages())[:2000])
        phrase = options.content_filter_phrase
        if phrase and any(phrase.lower() in m["content"].lower() for m in req.prompt_messages()):
            raise ApiError(
                400,
                "content_filter",
                "The response was filtered due to the prompt triggering the content management "
                "policy (emulated by the local server for the lesson). Please modify your prompt "
                "and retry.",
            )

        run = Run(app, req, params, key)
        run.choice = choice
        await _unless_disconnected(request, run, run.start())
        cid, created, model = new_completion_id(), int(time.time()), choice.name

        if not req.stream:
            text = "".join(await _unless_disconnected(request, run, run.text()))
            if run.failure:
                raise run.failure
            return JSONResponse(
                {
                    "id": cid,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": run.finish_reason,
                        }
                    ],
                    "usage": run.usage.as_dict(),
                }
            )

        def chunk(choices: list, **extra) -> bytes:
            return _sse(
                {
                    "id": cid,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": choices,
                    **extra,
                }
            )

        async def events() -> AsyncIterator[bytes]:
            yield chunk(
                [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]
            )
            async for piece in run.pieces():
                yield chunk([{"index": 0, "delta": {"content": piece}, "finish_reason": None}])
            if run.failure:  # the status line is sent: say it the way OpenAI does, no [DONE]
                yield _sse({"error": {"code": run.failure.code, "message": run.failure.message}})
                return
            yield chunk([{"index": 0, "delta": {}, "finish_reason": run.finish_reason}])
            # Like Azure and OpenAI (stream_options.include_usage): a last chunk with no choices.
            yield chunk([], usage=run.usage.as_dict())
            yield _sse("[DONE]")

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    def models(request: Request) -> dict:
        _check_key(request, options.api_key)
        return {
            "object": "list",
            "data": [
                {"id": c.name, "object": "model", "created": 0, "owned_by": "local"}
                for c in registry.available()
            ],
        }

    def info_route(request: Request) -> dict:
        _check_key(request, options.api_key)
        return info()

    chat_body = {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": ChatRequest.model_json_schema()}},
        }
    }
    for path in ("/chat/completions", "/v1/chat/completions", "/models/chat/completions"):
        app.add_api_route(
            path,
            chat,
            methods=["POST"],
            openapi_extra=chat_body,
            include_in_schema=path != "/models/chat/completions",
        )

    def get_route(path: str, endpoint: Callable, include_in_schema: bool = True) -> None:
        """GET, and HEAD (`curl -I`, load balancers' health checks) kept out of the schema."""
        app.add_api_route(path, endpoint, methods=["GET"], include_in_schema=include_in_schema)
        app.add_api_route(path, endpoint, methods=["HEAD"], include_in_schema=False)

    for path in ("/info", "/models/info"):
        get_route(path, info_route, include_in_schema=path == "/info")
    get_route("/v1/models", models)

    def health() -> dict:
        return {
            "status": "ok",
            "server": "phihelpers",
            "pid": os.getpid(),
            "model": registry.default.name,
            "generating": app.state.gate.active,  # 0 or 1: the model is busy
            "queued": app.state.gate.waiting,
        }

    get_route("/health", health)
    return app
