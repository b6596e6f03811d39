"""The server's routes: the Azure AI Model Inference API and the OpenAI-compatible one.

    POST /chat/completions?api-version=...    azure-ai-inference (what the seed's code calls)
    GET  /info                                client.get_model_info()
    POST /v1/chat/completions, GET /v1/models the openai SDK, curl, LangChain, ...
    POST /models/chat/completions, GET /models/info   the retired Azure AI Foundry endpoint shape
    POST /openai/v1/chat/completions, GET /openai/v1/models   Microsoft Foundry's OpenAI v1 shape
    GET  /health                              readiness (no key needed); answers a client's
                                              challenge header (phihelpers.state)

Everything is validated before the first byte is sent, so a bad request gets a 4xx in the
{"error": {"code", "message"}} shape, never a 200 stream cut short. Routes read what they need
from `request.app.state` (settings, models, gate...; see app.py).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError

from ..state import CHALLENGE_HEADER, challenge_answer
from . import tools
from .bridge import Run, unless_disconnected
from .engine import new_completion_id
from .errors import ApiError, bad_request
from .guards import authenticate, check_content_type, read_body
from .params import generation_params
from .schema import ChatRequest, describe

log = logging.getLogger("phihelpers.server")

ROUTES_HELP = (
    "This server answers POST /chat/completions and POST /embeddings (Azure AI Model Inference "
    "API), POST /v1/chat/completions and POST /v1/embeddings (OpenAI-compatible), GET /info and "
    "GET /v1/models."
)

# /models/...: the retired Azure AI Model Inference endpoint shape; /openai/v1/...: Microsoft
# Foundry's OpenAI v1 API, so the server stands in for a Foundry resource's root URL too.
CHAT_PATHS = (
    "/chat/completions",
    "/v1/chat/completions",
    "/models/chat/completions",
    "/openai/v1/chat/completions",
)
HIDDEN = ("/models/", "/openai/")  # aliases kept out of the OpenAPI schema

router = APIRouter()


def _sse(data: dict | str) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {payload}\n\n".encode()


async def _parse(request: Request) -> ChatRequest:
    check_content_type(request)
    body = await read_body(request, request.app.state.settings.max_body_bytes)
    try:
        return ChatRequest.model_validate_json(body)
    except ValidationError as exc:
        raise bad_request(describe(exc)) from None


def _content_filter(request: Request, messages: list[dict]) -> None:
    """Lesson 07: a prompt with the configured phrase is refused the way Azure's filter does."""
    phrase = request.app.state.settings.content_filter_phrase.lower()
    if phrase and any(phrase in m["content"].lower() for m in messages):
        raise ApiError(
            400,
            "content_filter",
            "The response was filtered due to the prompt triggering the content management "
            "policy (emulated by the local server for the lesson). Please modify your prompt "
            "and retry.",
        )


async def chat(request: Request, caller: str = Depends(authenticate)):
    state = request.app.state
    req = await _parse(request)
    choice = state.models.resolve(req.model)  # 404 model_not_found if in the catalog, not pulled
    tool_plan = tools.plan(req)
    params = generation_params(req, choice.n_ctx, state.settings.default_max_tokens, tool_plan)
    messages = req.prompt_messages()
    if state.settings.log_prompts:
        log.info("prompt: %s", json.dumps(messages)[:2000])
    _content_filter(request, messages)
    if tool_plan:
        messages = tools.with_tools(messages, tool_plan)

    run = Run(state, messages, params, caller, choice)
    await unless_disconnected(request, run, run.start())
    head = {"id": new_completion_id(), "created": int(time.time()), "model": choice.name}
    # every answer and chunk reads {"id", "object", "created", "model", "choices", ...}
    if req.stream:
        return StreamingResponse(
            _events(run, head, _wants_usage(req), tool_plan is not None),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    text = await unless_disconnected(request, run, run.text())
    if run.failure:
        raise run.failure
    message, finish_reason = _message(text, run.finish_reason, tool_plan is not None)
    _count_tokens(run)
    return JSONResponse(
        {
            "id": head["id"],
            "object": "chat.completion",
            **head,
            "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
            "usage": run.usage.as_dict(),
        }
    )


def _count_tokens(run: Run) -> None:
    """A finished answer's tokens, for the caller's row of the usage table (admin.py)."""
    run.state.usage.add_tokens(run.key, run.usage.prompt_tokens, run.usage.completion_tokens)


def _message(text: str, finish_reason: str | None, with_tools: bool) -> tuple[dict, str | None]:
    """The assistant message (and finish_reason) for a whole answer."""
    if not with_tools:
        return {"role": "assistant", "content": text}, finish_reason
    reader = tools.AnswerReader()
    reader.feed(text)
    answer = reader.result()
    if answer is None:  # cut short by max_tokens: what there is of the answer, no calls
        return {"role": "assistant", "content": reader.answer}, finish_reason
    if answer.tool_calls:
        return {"role": "assistant", "content": None, "tool_calls": answer.tool_calls}, "tool_calls"
    return {"role": "assistant", "content": answer.content}, finish_reason


def _wants_usage(req: ChatRequest) -> bool:
    """The last usage chunk: sent unless stream_options.include_usage is false. Azure sends
    it always; OpenAI only when asked, and its clients tolerate it either way."""
    return not (req.stream_options and req.stream_options.include_usage is False)


async def _events(run: Run, head: dict, with_usage: bool, with_tools: bool) -> AsyncIterator[bytes]:
    """The SSE stream: a role chunk, content (or tool_calls) chunks, a finish chunk, usage,
    [DONE]."""

    def chunk(choices: list, **extra) -> bytes:
        body = {"id": head["id"], "object": "chat.completion.chunk", **head}
        return _sse({**body, "choices": choices, **extra})

    def delta(content: dict, finish_reason: str | None = None) -> list:
        return [{"index": 0, "delta": content, "finish_reason": finish_reason}]

    yield chunk(delta({"role": "assistant", "content": ""}))
    reader = tools.AnswerReader() if with_tools else None
    async for piece in run.pieces():
        text = reader.feed(piece) if reader else piece
        if text:
            yield chunk(delta({"content": text}))
    if run.failure:  # the status line is sent: say it the way OpenAI does, no [DONE]
        yield _sse({"error": {"code": run.failure.code, "message": run.failure.message}})
        return
    finish_reason = run.finish_reason
    answer = reader.result() if reader else None
    if answer and answer.tool_calls:
        for calls in tools.call_deltas(answer.tool_calls):
            yield chunk(delta({"tool_calls": calls}))
        finish_reason = "tool_calls"
    yield chunk(delta({}, finish_reason))
    _count_tokens(run)
    if with_usage:  # like Azure and OpenAI's include_usage: a last chunk with no choices
        yield chunk([], usage=run.usage.as_dict())
    yield _sse("[DONE]")


def info(request: Request, _caller: str = Depends(authenticate)) -> dict:
    return request.app.state.models.info()


def models(request: Request, _caller: str = Depends(authenticate)) -> dict:
    return {
        "object": "list",
        "data": [
            {"id": c.name, "object": "model", "created": 0, "owned_by": "local"}
            for c in request.app.state.models.available()
        ],
    }


def _proof(request: Request) -> str | None:
    """The answer to a client's challenge: HMAC-SHA256(state secret, its nonce), never the
    secret itself (phihelpers.state). None without a challenge or a secret."""
    secret = getattr(request.app.state, "state_secret", None)
    nonce = request.headers.get(CHALLENGE_HEADER, "")
    return challenge_answer(secret, nonce) if secret and nonce else None


def health(request: Request) -> dict:
    state = request.app.state
    answer = {
        "status": "ok",
        "server": "phihelpers",
        "pid": os.getpid(),
        "model": state.models.default.name,
        "generating": state.gate.active,  # answers in slots now
        "slots": state.gate.limits.slots,  # answers decoded together at most (--parallel)
        "queued": state.gate.waiting,
    }
    proof = _proof(request)
    if proof:
        answer["proof"] = proof  # this is the server its state file names
    return answer


def _get(path: str, endpoint: Callable, include_in_schema: bool = True) -> None:
    """GET, and HEAD (`curl -I`, load balancers' health checks) kept out of the schema."""
    router.add_api_route(path, endpoint, methods=["GET"], include_in_schema=include_in_schema)
    router.add_api_route(path, endpoint, methods=["HEAD"], include_in_schema=False)


_CHAT_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": ChatRequest.model_json_schema()}},
    }
}
for _path in CHAT_PATHS:
    router.add_api_route(
        _path,
        chat,
        methods=["POST"],
        openapi_extra=_CHAT_BODY,
        include_in_schema=not _path.startswith(HIDDEN),
    )
_get("/info", info)
_get("/models/info", info, include_in_schema=False)
_get("/v1/models", models)
_get("/openai/v1/models", models, include_in_schema=False)
_get("/health", health)
