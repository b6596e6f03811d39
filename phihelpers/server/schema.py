"""The request body of a chat completion, validated strictly before any work starts."""

from __future__ import annotations

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


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None


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
    tools: list[dict] | None = None

    def prompt_messages(self) -> list[dict]:
        """Messages as the chat template wants them: role and plain text."""
        out = []
        for i, m in enumerate(self.messages):
            if isinstance(m.content, list):
                texts = []
                for part in m.content:
                    if not isinstance(part, TextPart):
                        raise ValueError(
                            f"messages[{i}].content has a '{part.type}' part, but the local "
                            "model reads text only."
                        )
                    texts.append(part.text)
                text = "".join(texts)
            else:
                text = m.content or ""
            out.append({"role": "system" if m.role == "developer" else m.role, "content": text})
        return out

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop)
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("stop takes at most 4 non-empty strings.")
        return stops


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
