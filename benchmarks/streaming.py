"""Time one streamed chat completion, the same way for every system the benchmark compares.

A stream is timed from just before the call to the last byte: time to the first piece of
text (TTFT), time of the last piece, how many tokens came, and how the stream ended. The
token count is the server's `usage.completion_tokens` when it sends one, otherwise the
number of text pieces (llama.cpp streams one piece per token).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass


@dataclass
class Timing:
    ttft: float | None = None  # seconds to the first non-empty text piece
    total: float | None = None  # seconds to the end of the stream
    tokens: int = 0
    pieces: int = 0
    finish_reason: str | None = None
    error: str | None = None  # "429", "cut_off", or an exception's name

    @property
    def decode_tps(self) -> float | None:
        """Tokens per second after the first one: the decode rate the client sees."""
        if self.ttft is None or self.total is None or self.tokens < 2:
            return None
        span = self.total - self.ttft
        return (self.tokens - 1) / span if span > 0 else None

    def as_dict(self) -> dict:
        return {**asdict(self), "decode_tps": self.decode_tps}


class _Clock:
    def __init__(self):
        self.t0 = time.perf_counter()
        self.timing = Timing()
        self.last = None

    def piece(self, text: str | None) -> None:
        if text:
            now = time.perf_counter()
            if self.timing.ttft is None:
                self.timing.ttft = now - self.t0
            self.timing.pieces += 1
            self.last = now

    def done(self, usage_tokens: int | None, max_tokens: int) -> Timing:
        t = self.timing
        t.total = time.perf_counter() - self.t0
        t.tokens = usage_tokens if usage_tokens else t.pieces
        if t.error is None and t.finish_reason not in ("stop", "length"):
            t.error = "cut_off"  # the stream ended without saying why: the client lost text
        return t

    def fail(self, exc: BaseException) -> Timing:
        t = self.timing
        t.total = time.perf_counter() - self.t0
        status = getattr(exc, "status_code", None) or getattr(
            getattr(exc, "response", None), "status_code", None
        )
        t.error = str(status) if status == 429 else type(exc).__name__
        return t


def in_process(llm, messages: list[dict], max_tokens: int) -> Timing:
    """llama-cpp-python in this process: no HTTP at all. The limit the servers aim at."""
    clock = _Clock()
    try:
        for chunk in llm.create_chat_completion(
            messages=messages, max_tokens=max_tokens, temperature=0.0, stream=True
        ):
            choice = chunk["choices"][0]
            clock.piece(choice["delta"].get("content"))
            if choice.get("finish_reason"):
                clock.timing.finish_reason = choice["finish_reason"]
    except Exception as exc:  # noqa: BLE001 - recorded, not raised: the run goes on
        return clock.fail(exc)
    return clock.done(None, max_tokens)


def azure_client(endpoint: str):
    from azure.ai.inference import ChatCompletionsClient
    from azure.core.credentials import AzureKeyCredential

    return ChatCompletionsClient(endpoint=endpoint, credential=AzureKeyCredential("benchmark"))


def azure_stream(client, messages: list[dict], max_tokens: int) -> Timing:
    """The seed's streaming call: ChatCompletionsClient.complete(stream=True)."""
    from azure.ai.inference.models import SystemMessage, UserMessage

    kinds = {"system": SystemMessage, "user": UserMessage}
    msgs = [kinds[m["role"]](content=m["content"]) for m in messages]
    clock = _Clock()
    usage = None
    try:
        response = client.complete(
            stream=True, messages=msgs, max_tokens=max_tokens, temperature=0.0
        )
        for update in response:
            if update.choices:
                choice = update.choices[0]
                clock.piece(choice.delta.content if choice.delta else None)
                if choice.finish_reason:  # an enum in azure-ai-inference
                    reason = choice.finish_reason
                    clock.timing.finish_reason = str(getattr(reason, "value", reason))
            if update.usage:
                usage = update.usage.completion_tokens
    except Exception as exc:  # noqa: BLE001
        return clock.fail(exc)
    return clock.done(usage, max_tokens)


def openai_client(base_url: str):
    import openai

    return openai.OpenAI(base_url=base_url, api_key="benchmark", max_retries=0, timeout=600)


def openai_stream(client, messages: list[dict], max_tokens: int) -> Timing:
    """client.chat.completions.create(stream=True), as the OpenAI lessons call it."""
    clock = _Clock()
    usage = None
    try:
        stream = client.chat.completions.create(
            model="local", messages=messages, max_tokens=max_tokens, temperature=0.0, stream=True
        )
        for chunk in stream:
            if chunk.choices:
                choice = chunk.choices[0]
                clock.piece(choice.delta.content if choice.delta else None)
                if choice.finish_reason:
                    clock.timing.finish_reason = choice.finish_reason
            if getattr(chunk, "usage", None):
                usage = chunk.usage.completion_tokens
    except Exception as exc:  # noqa: BLE001
        return clock.fail(exc)
    return clock.done(usage, max_tokens)


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    vals = sorted(v for v in values if v is not None)
    if not vals:
        return None
    rank = max(1, -(-len(vals) * q // 100))  # ceil without floats
    return vals[int(min(rank, len(vals))) - 1]
