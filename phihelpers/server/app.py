"""Assembles the local model server: state, middleware, error handlers and the routes.

    app = create_app(registry_or_engine, ServeSettings.build(...))

`app.state` holds what the routes (routes.py) and the generation bridge (bridge.py) read:
`settings` (ServeSettings), `models` (the ModelRegistry), `gate` (admission control: a slot per
parallel sequence), `scheduler` (the engine thread, batching.py), `runs` (answers in progress),
`closing` (set at shutdown) and `begin_shutdown()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import replace

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from .admin import install as install_admin
from .batching import Scheduler
from .embeddings import router as embeddings_router
from .engine import Engine
from .errors import ApiError, error_response
from .limits import Gate
from .models import ModelRegistry
from .origin import HostAndOriginGuard
from .routes import ROUTES_HELP, router
from .settings import ServeSettings

log = logging.getLogger("phihelpers.server")


class QuietForcedShutdown:
    """When uvicorn's graceful-shutdown timeout runs out it cancels what still runs (a prompt
    that took longer to read than the timeout): one log line, not a traceback."""

    def __init__(self, asgi, app: FastAPI):
        self.asgi = asgi
        self.app = app

    async def __call__(self, scope, receive, send):
        try:
            await self.asgi(scope, receive, send)
        except asyncio.CancelledError:
            if not self.app.state.closing.is_set():
                raise
            log.info("%s %s cut short by the shutdown", scope.get("method"), scope["path"])


async def _api_error(_request: Request, exc: ApiError):
    return exc.response()


def _routes(routes) -> list:
    """Every route, also those of included routers (FastAPI keeps those nested)."""
    found = []
    for r in routes:
        found.append(r)
        inner = getattr(r, "original_router", None) or r  # fastapi's _IncludedRouter
        found.extend(_routes(getattr(inner, "routes", None) or []))
    return found


async def _http_error(request: Request, exc: StarletteHTTPException):
    if exc.status_code == 404:
        return error_response(
            404, "not_found", f"No route {request.method} {request.url.path}. {ROUTES_HELP}"
        )
    if exc.status_code == 405:
        allowed = sorted(
            {m for r in _routes(request.app.routes) if getattr(r, "path", None) == request.url.path
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


async def _validation_error(_request: Request, exc: RequestValidationError):
    return error_response(400, "invalid_request", str(exc.errors()[:3]))


async def _unexpected(_request: Request, exc: Exception):
    log.exception("unexpected error", exc_info=exc)
    return error_response(500, "internal_error", "Unexpected server error; see the server log.")


def _begin_shutdown(app: FastAPI) -> None:
    """The server was told to stop: end generations now, answer the queue with 503."""
    app.state.closing.set()
    for run in list(app.state.runs):
        run.cancelled = True


def create_app(
    models: ModelRegistry | Engine,
    settings: ServeSettings | None = None,
    on_start: Callable[[], None] | None = None,
    on_stop: Callable[[], None] | None = None,
) -> FastAPI:
    """The ASGI app around a model registry (or one loaded Engine) with these settings."""
    settings = settings or ServeSettings()
    if isinstance(models, Engine):
        models = ModelRegistry.for_engine(models)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        if on_start:
            on_start()
        try:
            yield
        finally:
            app.state.scheduler.close()
            if on_stop:
                on_stop()

    app = FastAPI(
        lifespan=lifespan,
        title="phihelpers local model server",
        description="Azure AI Model Inference API and OpenAI-compatible chat completions, "
        "served by llama.cpp.",
        version="0.1.0",
    )
    app.state.settings = settings
    app.state.models = models  # which GGUF answers which `model`
    app.state.gate = Gate(replace(settings.limits, slots=models.parallel))
    app.state.scheduler = Scheduler(models)  # the engine thread: decodes every answer together
    app.state.runs = set()
    app.state.closing = asyncio.Event()
    app.state.begin_shutdown = lambda: _begin_shutdown(app)

    app.add_middleware(QuietForcedShutdown, app=app)
    origins = [o for o in settings.cors_origin if o]
    if origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["*"],
        )
    app.add_middleware(HostAndOriginGuard, settings=settings)  # outermost: before any work
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
    app.include_router(router)
    app.include_router(embeddings_router)
    install_admin(app)  # attendee keys (--keys-file), the usage count, GET /admin/usage
    return app
