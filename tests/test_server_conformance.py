"""The same chat scenarios through every real client the lessons teach, against the real server.

Each client (azure-ai-inference sync and async, openai sync and async, the curl binary, raw
httpx) runs each scenario (basic, multi-turn, streaming, max_tokens cut-off, stop sequences,
model info); every client x scenario pair is one test. Replies are normalised to a `Reply` and
checked for structure only: the model's words are never compared. (The JavaScript SDK leg is
tests/test_js_samples.py.)
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from dataclasses import dataclass, field

import httpx
import pytest

API_VERSION = "2024-05-01-preview"
SYSTEM = "You are a helpful assistant."
BASIC = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": "What is the capital of France?"},
]
MULTI_TURN = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "The capital of France is Paris."},
    {"role": "user", "content": "What about Spain?"},
]
LONG_ASK = [{"role": "user", "content": "Write a long essay about the history of Rome."}]
# Any answer of more than one word contains a space: with these stops it ends at the first one.
STOPS = [" ", "\n"]

SCENARIOS = {
    #  name        messages     request options                       streamed
    "basic": (BASIC, {"max_tokens": 16}, False),
    "multi_turn": (MULTI_TURN, {"max_tokens": 16}, False),
    "streaming": (BASIC, {"max_tokens": 16}, True),
    "length": (LONG_ASK, {"max_tokens": 3}, False),
    "stop": (BASIC, {"max_tokens": 30, "stop": STOPS}, False),
}


@dataclass
class Reply:
    """One chat answer as any client saw it."""

    content: str
    finish_reason: str | None
    usage: dict | None
    model: str | None
    role: str | None = "assistant"
    pieces: list[str] = field(default_factory=list)  # streamed deltas, in order


def _usage(u) -> dict | None:
    if u is None:
        return None
    get = u.get if isinstance(u, dict) else (lambda k: getattr(u, k))
    return {k: get(k) for k in ("prompt_tokens", "completion_tokens", "total_tokens")}


# -- strict SSE ---------------------------------------------------------------------------------
def parse_sse_strictly(raw: bytes) -> list[dict]:
    """The wire format the Python and JS clients demand, checked byte for byte.

    Every event is exactly `data: <one-line JSON>` followed by one blank line, LF endings, no
    other fields or comments, and the stream ends with `data: [DONE]`.
    """
    assert b"\r" not in raw, "SSE must use LF line endings"
    assert raw.endswith(b"data: [DONE]\n\n"), (
        f"stream must end with data: [DONE], got {raw[-60:]!r}"
    )
    events = raw[: -len(b"\n\n")].split(b"\n\n")
    assert events[-1] == b"data: [DONE]"
    chunks = []
    for event in events[:-1]:
        assert b"\n" not in event, f"one line per event: {event[:120]!r}"
        assert event.startswith(b"data: "), f"only data: lines: {event[:120]!r}"
        assert event != b"data: [DONE]", "[DONE] must come last, once"
        chunk = json.loads(event[len(b"data: ") :])
        assert isinstance(chunk, dict)
        chunks.append(chunk)
    return chunks


def reply_from_chunks(chunks: list[dict]) -> Reply:
    """Check the chunk sequence (role first, a delta in every choice, usage last) and join it."""
    assert chunks, "no chunks before [DONE]"
    for c in chunks:
        assert c["object"] == "chat.completion.chunk"
        assert isinstance(c["choices"], list)
        for choice in c["choices"]:
            assert isinstance(choice["delta"], dict)
    first = next(c for c in chunks if c["choices"])
    role = first["choices"][0]["delta"].get("role")
    pieces = [
        ch["delta"]["content"] for c in chunks for ch in c["choices"] if ch["delta"].get("content")
    ]
    reasons = [ch["finish_reason"] for c in chunks for ch in c["choices"] if ch["finish_reason"]]
    assert len(reasons) == 1, f"exactly one finish_reason in a stream, got {reasons}"
    usage = [c["usage"] for c in chunks if c.get("usage")]
    assert chunks[-1]["choices"] == [] and chunks[-1].get("usage"), "last chunk: usage, no choices"
    assert len({c["id"] for c in chunks}) == 1, "one completion id across the stream"
    return Reply("".join(pieces), reasons[0], usage[-1], chunks[0]["model"], role, pieces)


def reply_from_json(body: dict) -> Reply:
    assert body["object"] == "chat.completion"
    assert body["id"] and isinstance(body["created"], int)
    assert len(body["choices"]) == 1 and body["choices"][0]["index"] == 0
    choice = body["choices"][0]
    return Reply(
        choice["message"]["content"],
        choice["finish_reason"],
        body["usage"],
        body["model"],
        choice["message"]["role"],
    )


# -- the clients ------------------------------------------------------------------------------
def azure_sync(ep, key, messages, options, stream):
    from azure.ai.inference import ChatCompletionsClient
    from azure.ai.inference.models import CompletionsFinishReason
    from azure.core.credentials import AzureKeyCredential

    with ChatCompletionsClient(endpoint=ep, credential=AzureKeyCredential(key)) as client:
        if messages is None:
            return client.get_model_info()
        response = client.complete(messages=messages, stream=stream, **options)
        if not stream:
            choice = response.choices[0]
            assert isinstance(choice.finish_reason, CompletionsFinishReason)
            return Reply(
                choice.message.content,
                choice.finish_reason,
                _usage(response.usage),
                response.model,
                choice.message.role,
            )
        return _azure_stream_reply(list(response))


def _azure_stream_reply(updates) -> Reply:
    pieces, reason, usage, role, model = [], None, None, None, None
    for update in updates:
        model = model or update.model
        if update.usage:
            usage = _usage(update.usage)
        for choice in update.choices:  # the final usage update has no choices: tolerate it
            role = role or choice.delta.role
            if choice.delta.content:
                pieces.append(choice.delta.content)
            reason = choice.finish_reason or reason
    return Reply("".join(pieces), reason, usage, model, role, pieces)


def azure_async(ep, key, messages, options, stream):
    from azure.ai.inference.aio import ChatCompletionsClient
    from azure.core.credentials import AzureKeyCredential

    async def run():
        async with ChatCompletionsClient(endpoint=ep, credential=AzureKeyCredential(key)) as client:
            if messages is None:
                return await client.get_model_info()
            response = await client.complete(messages=messages, stream=stream, **options)
            if not stream:
                choice = response.choices[0]
                return Reply(
                    choice.message.content,
                    choice.finish_reason,
                    _usage(response.usage),
                    response.model,
                    choice.message.role,
                )
            return _azure_stream_reply([update async for update in response])

    return asyncio.run(run())


def _openai_reply(completion) -> Reply:
    choice = completion.choices[0]
    return Reply(
        choice.message.content,
        choice.finish_reason,
        _usage(completion.usage),
        completion.model,
        choice.message.role,
    )


def _openai_stream_reply(chunks) -> Reply:
    pieces, reason, usage, role = [], None, None, None
    for chunk in chunks:
        if chunk.usage:
            usage = _usage(chunk.usage)
        for choice in chunk.choices:
            role = role or choice.delta.role
            if choice.delta.content:
                pieces.append(choice.delta.content)
            reason = choice.finish_reason or reason
    return Reply("".join(pieces), reason, usage, chunks[0].model, role, pieces)


def _openai_args(messages, options, stream):
    args = {"model": "any", "messages": messages, **options}
    if stream:
        args.update(stream=True, stream_options={"include_usage": True})
    return args


def openai_sync(ep, key, messages, options, stream):
    from openai import OpenAI

    with OpenAI(base_url=ep + "/v1", api_key=key) as client:
        if messages is None:
            return client.models.list()
        result = client.chat.completions.create(**_openai_args(messages, options, stream))
        return _openai_stream_reply(list(result)) if stream else _openai_reply(result)


def openai_async(ep, key, messages, options, stream):
    from openai import AsyncOpenAI

    async def run():
        async with AsyncOpenAI(base_url=ep + "/v1", api_key=key) as client:
            if messages is None:
                return await client.models.list()
            result = await client.chat.completions.create(**_openai_args(messages, options, stream))
            if stream:
                return _openai_stream_reply([chunk async for chunk in result])
            return _openai_reply(result)

    return asyncio.run(run())


def curl(ep, key, messages, options, stream):
    """The real curl binary, called the way the seed's cURL sample does."""
    marker = "\n--status:"

    def run(*args: str) -> tuple[int, bytes]:
        out = subprocess.run(
            [
                "curl",
                "-sS",
                "--no-buffer",
                "--max-time",
                "60",
                "-w",
                marker + "%{http_code}",
                *args,
            ],
            capture_output=True,
            check=True,
            timeout=90,
        ).stdout
        body, _, status = out.rpartition(marker.encode())
        return int(status), body

    if messages is None:
        got = {}
        for path in (f"/info?api-version={API_VERSION}", "/v1/models"):
            status, body = run("-H", f"Authorization: Bearer {key}", ep + path)
            assert status == 200, body
            got[path.split("?")[0]] = json.loads(body)
        return got
    payload = json.dumps({"messages": messages, "stream": stream, **options})
    status, body = run(
        "-X", "POST", f"{ep}/chat/completions?api-version={API_VERSION}",
        "-H", "Content-Type: application/json",
        "-H", f"Authorization: Bearer {key}",
        "-d", payload,
    )  # fmt: skip
    assert status == 200, body
    return (
        reply_from_chunks(parse_sse_strictly(body)) if stream else reply_from_json(json.loads(body))
    )


def raw_httpx(ep, key, messages, options, stream):
    headers = {"api-key": key}
    with httpx.Client(base_url=ep, timeout=60, headers=headers) as client:
        if messages is None:
            info = client.get("/info", params={"api-version": API_VERSION})
            models = client.get("/v1/models")
            assert info.status_code == models.status_code == 200
            assert info.headers["content-type"].startswith("application/json")
            return {"/info": info.json(), "/v1/models": models.json()}
        body = {"messages": messages, "stream": stream, **options}
        r = client.post("/chat/completions", params={"api-version": API_VERSION}, json=body)
        assert r.status_code == 200, r.text
        if not stream:
            assert r.headers["content-type"].startswith("application/json")
            return reply_from_json(r.json())
        assert r.headers["content-type"].startswith("text/event-stream")
        return reply_from_chunks(parse_sse_strictly(r.content))


CLIENTS = {
    "azure_sync": azure_sync,
    "azure_async": azure_async,
    "openai_sync": openai_sync,
    "openai_async": openai_async,
    "curl": curl,
    "httpx": raw_httpx,
}


# -- the checks -------------------------------------------------------------------------------
def check_usage(reply: Reply) -> dict:
    u = reply.usage
    assert u is not None, "usage missing"
    assert u["prompt_tokens"] > 0 and u["completion_tokens"] > 0
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
    return u


def check_reply(name: str, reply: Reply, options: dict, model: str) -> None:
    assert reply.model == model, "response.model names the model that answered"
    assert reply.role == "assistant"
    assert isinstance(reply.content, str)
    usage = check_usage(reply)
    assert usage["completion_tokens"] <= options["max_tokens"]
    if name == "length":
        assert reply.finish_reason == "length"  # azure: CompletionsFinishReason.TOKEN_LIMIT_REACHED
        assert usage["completion_tokens"] == options["max_tokens"]
        assert reply.content
    elif name == "stop":
        assert reply.finish_reason == "stop"  # azure: CompletionsFinishReason.STOPPED
        assert not any(s in reply.content for s in STOPS), repr(reply.content)
        assert usage["completion_tokens"] < options["max_tokens"]
    else:
        assert reply.finish_reason in ("stop", "length")
        assert reply.content.strip(), "an answer with some text"
    if name == "streaming":
        assert len(reply.pieces) >= 2, "a stream arrives in pieces"


def check_model_info(client: str, info, model: str) -> None:
    if client.startswith("azure"):
        assert info.model_name == model
        assert info.model_type == "chat_completion"
        assert info.model_provider_name
    elif client.startswith("openai"):
        assert [m.id for m in info.data] == [model]
    else:
        assert info["/info"]["model_name"] == model
        assert info["/info"]["model_type"] == "chat_completion"
        assert info["/v1/models"]["object"] == "list"
        assert [m["id"] for m in info["/v1/models"]["data"]] == [model]


@pytest.mark.parametrize("scenario", [*SCENARIOS, "model_info"])
@pytest.mark.parametrize("client", list(CLIENTS))
def test_client_scenario(client, scenario, settings):
    call = CLIENTS[client]
    ep, key, model = settings.endpoint, settings.credential_key, settings.model
    if scenario == "model_info":
        check_model_info(client, call(ep, key, None, None, False), model)
        return
    messages, options, stream = SCENARIOS[scenario]
    reply = call(ep, key, messages, dict(options), stream)
    check_reply(scenario, reply, options, model)


@pytest.mark.parametrize(
    "path", ["/chat/completions", "/v1/chat/completions", "/models/chat/completions"]
)
def test_every_chat_route_answers_the_openai_sdk(path, settings):
    """The GitHub samples passed the inference endpoint itself as the openai base_url."""
    from openai import OpenAI

    base = settings.endpoint + path.removesuffix("/chat/completions")
    with OpenAI(base_url=base, api_key=settings.credential_key) as client:
        result = client.chat.completions.create(model="any", messages=BASIC, max_tokens=4)
    check_usage(_openai_reply(result))


def test_python_client_streams_despite_accept_json(settings):
    """azure-ai-inference sends Accept: application/json even when streaming."""
    r = httpx.post(
        settings.endpoint + "/chat/completions",
        headers={"Accept": "application/json"},
        json={"messages": BASIC, "stream": True, "max_tokens": 4},
        timeout=60,
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    reply_from_chunks(parse_sse_strictly(r.content))
