"""The request bodies (chat completions, embeddings), validated strictly before any work starts."""

from __future__ import annotations

import json
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: str


class OtherPart(BaseModel):
    """Image or audio parts: understood, but this text-only model cannot take them."""

    model_config = ConfigDict(extra="ignore")
    type: Literal["image_url", "input_audio", "audio_url", "file"]


ContentPart = Annotated[TextPart | OtherPart, Field(discriminator="type")]


class FunctionCall(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str = Field(min_length=1, max_length=64)
    arguments: str  # a JSON string, as the model produced it


class ToolCall(BaseModel):
    """A call an assistant message made (it comes back in the history of the next request)."""

    model_config = ConfigDict(extra="ignore")
    id: str = Field(min_length=1, max_length=256)
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    tool_calls: list[ToolCall] | None = None  # assistant messages only
    tool_call_id: str | None = None  # tool messages: which call this is the result of


class FunctionDefinition(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    parameters: dict | None = None  # a JSON schema; none means "no arguments"
    strict: bool | None = None


class Tool(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str


class NamedToolChoice(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["function"]
    function: NamedFunction


class JsonSchemaSpec(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str = Field(min_length=1, max_length=64)
    schema_: dict = Field(alias="schema")
    description: str | None = None
    strict: bool | None = None


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaSpec | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    include_usage: bool | None = None


class ChatRequest(BaseModel):
    """Fields of the Azure AI Model Inference and OpenAI chat APIs; unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore", strict=True)

    messages: list[Message] = Field(min_length=1)
    model: str | None = Field(default=None, max_length=256)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    n: int | None = Field(default=None, ge=1, le=1)
    tools: list[Tool] | None = None
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    # Known fields the local server cannot honour: refused with a sentence (params.py), not
    # dropped silently.
    logit_bias: dict | None = None
    functions: list | None = None
    function_call: str | dict | None = None
    modalities: list[str] | None = None
    audio: dict | None = None
    prediction: dict | None = None
    web_search_options: dict | None = None

    def prompt_messages(self) -> list[dict]:
        """Messages as the chat template wants them: role and plain text.

        Tool turns are written in the generic format of phihelpers/server/tools.py: an
        assistant's calls as the JSON it answered with, a tool's result as a user turn that
        names the call (templates differ in whether they know a "tool" role at all)."""
        out, calls = [], {}
        for i, m in enumerate(self.messages):
            text = _text_of(m, i)
            if m.role == "assistant" and m.tool_calls:
                for call in m.tool_calls:
                    calls[call.id] = call.function.name
                text = json.dumps({"tool_calls": [_call_json(c) for c in m.tool_calls]})
            if m.role == "tool":
                if not m.tool_call_id:
                    raise ValueError(f"messages[{i}] has role 'tool' but no tool_call_id.")
                if m.tool_call_id not in calls:
                    raise ValueError(
                        f"messages[{i}].tool_call_id={m.tool_call_id!r} answers no call: a 'tool' "
                        "message must follow an assistant message whose tool_calls has that id."
                    )
                name = calls[m.tool_call_id]
                out.append({"role": "user", "content": f"Result of the tool {name}: {text}"})
                continue
            out.append({"role": "system" if m.role == "developer" else m.role, "content": text})
        return out

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop)
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("stop takes at most 4 non-empty strings.")
        return stops


def _text_of(m: Message, i: int) -> str:
    if not isinstance(m.content, list):
        return m.content or ""
    texts = []
    for part in m.content:
        if not isinstance(part, TextPart):
            raise ValueError(
                f"messages[{i}].content has a '{part.type}' part, but the local model reads "
                "text only."
            )
        texts.append(part.text)
    return "".join(texts)


def _call_json(call: ToolCall) -> dict:
    try:
        arguments = json.loads(call.function.arguments)
    except ValueError:
        arguments = call.function.arguments  # shown as it was sent
    return {"name": call.function.name, "arguments": arguments}


def _json_path(loc: tuple) -> str:
    """pydantic's error location as a JSON path: ('messages', 0, 'content', 'list[...]', 1,
    'text', 'text') -> 'messages[0].content[1].text'. Union branch names are dropped, and so
    is the tag that a list of tagged unions puts after the index."""
    path, skip_tag = "", False
    for prev, item in zip((None, *loc), loc, strict=False):
        if isinstance(item, int):
            path += f"[{item}]"
            skip_tag = isinstance(prev, str) and "tagged-union" in prev
        elif skip_tag:
            skip_tag = False  # the discriminator's value ('text'), not a field
        elif "[" in item or item in ("str", "int", "float", "bool", "function-after"):
            continue  # pydantic's names for union branches, not part of the JSON path
        else:
            path += f".{item}" if path else item
    return path


def describe(error: ValidationError, limit: int = 3) -> str:
    """A ValidationError as one readable sentence: 'messages[0].role: Input should be ...'."""
    by_loc: dict[str, list[str]] = {}
    for err in error.errors():
        if err["type"] == "json_invalid":
            return f"The request body is not valid JSON: {err.get('ctx', {}).get('error', err['msg'])}."
        by_loc.setdefault(_json_path(err["loc"]) or "body", []).append(err["msg"])
    parts = []
    for loc, msgs in list(by_loc.items())[:limit]:
        first, *rest = msgs
        parts.append(
            f"{loc}: {first}" + "".join(f", or {m.removeprefix('Input should be ')}" for m in rest)
        )
    more = len(by_loc) - limit
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


class EmbeddingsRequest(BaseModel):
    """POST /embeddings (azure-ai-inference EmbeddingsClient) and /v1/embeddings (openai)."""

    model_config = ConfigDict(extra="ignore", strict=True)

    input: str | list[str]
    model: str | None = Field(default=None, max_length=256)
    dimensions: int | None = Field(default=None, ge=1)
    encoding_format: Literal["float", "base64"] | None = None
    input_type: Literal["text", "query", "document"] | None = None

    def texts(self) -> list[str]:
        texts = [self.input] if isinstance(self.input, str) else list(self.input)
        if not texts:
            raise ValueError("input is empty: send a string or a list of strings to embed.")
        if len(texts) > 2048:
            raise ValueError(f"input has {len(texts)} strings; send at most 2048 per request.")
        for i, text in enumerate(texts):
            if not text:
                raise ValueError(f"input[{i}] is an empty string: there is nothing to embed.")
        return texts
