"""Tool calling in a generic format that any chat model can follow, kept valid by a grammar.

The chat templates of small models (SmolLM2's among them) know nothing of tools, so the server
describes the tools in the system turn and constrains the answer with a llama.cpp grammar
built from this JSON schema:

    {"answer": "<text>"}                                            a plain answer, or
    {"tool_calls": [{"name": "<tool>", "arguments": {<its parameters>}}, ...]}

`tool_choice` picks the branches: "auto" both, "required" only calls, a named function only
calls of it, "none" neither (the tools are not shown and the answer is free text). Because the
grammar admits only the tools' own names and parameter schemas, every call parses and validates;
whether the model picked the right tool and the right values is another matter (lesson 12).
The history's tool turns are rendered by schema.ChatRequest.prompt_messages().
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass

from .errors import bad_request
from .schema import ChatRequest, Tool
from .structured import check_schema

MAX_CALLS = 4  # calls in one answer: a small model must not repeat itself forever


@dataclass(frozen=True)
class ToolPlan:
    """What a request with tools asks of the model."""

    tools: list[Tool]
    allow_answer: bool
    schema: dict  # the grammar's JSON schema

    def system_text(self) -> str:
        if not self.tools:  # tool_choice "none" after tool turns: an answer only
            return 'Answer the user now, replying with only {"answer": "<your answer>"}.'
        listing = json.dumps(
            [
                {
                    "name": t.function.name,
                    "description": t.function.description or "",
                    "parameters": t.function.parameters or {"type": "object", "properties": {}},
                }
                for t in self.tools
            ]
        )
        text = (
            f"You can call these tools:\n{listing}\nTo call tools, reply with only this JSON: "
            '{"tool_calls": [{"name": "<tool name>", "arguments": {<arguments>}}]}.'
        )
        if self.allow_answer:
            text += ' To answer without a tool, reply with only {"answer": "<your answer>"}.'
        return text


def plan(req: ChatRequest) -> ToolPlan | None:
    """The tool plan of a request, or None when no tools take part (none given, or "none").

    One exception: "none" after tool turns in the history. A small model that sees its earlier
    calls as JSON imitates them in free text, so its answer is kept to the {"answer": ...}
    branch and unwrapped, like every other answer of a tool conversation."""
    if req.tool_choice == "none" and _has_tool_turns(req):
        return ToolPlan([], True, _object({"answer": {"type": "string"}}))
    if not req.tools or req.tool_choice == "none":
        return None
    names = [t.function.name for t in req.tools]
    if len(set(names)) != len(names):
        raise bad_request("tools has two functions with the same name; give each its own name.")
    tools = req.tools
    choice = req.tool_choice or "auto"
    if not isinstance(choice, str):
        tools = [t for t in req.tools if t.function.name == choice.function.name]
        if not tools:
            raise bad_request(
                f"tool_choice names the function {choice.function.name!r}, which is not in "
                f"tools ({', '.join(names)})."
            )
    for i, t in enumerate(tools):
        if t.function.parameters is not None:
            check_schema(t.function.parameters, f"tools[{i}].function.parameters")
    calls = {
        "type": "array",
        "minItems": 1,
        "maxItems": 1 if req.parallel_tool_calls is False else MAX_CALLS,
        "items": {"anyOf": [_call_schema(t) for t in tools]},
    }
    call_branch = _object({"tool_calls": calls})
    allow_answer = choice == "auto"
    schema = (
        {"anyOf": [_object({"answer": {"type": "string"}}), call_branch]}
        if allow_answer
        else call_branch
    )
    return ToolPlan(tools, allow_answer, schema)


def _has_tool_turns(req: ChatRequest) -> bool:
    return any(m.role == "tool" or m.tool_calls for m in req.messages)


def _object(properties: dict) -> dict:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def _call_schema(tool: Tool) -> dict:
    params = tool.function.parameters or {"type": "object", "properties": {}}
    return _object({"name": {"const": tool.function.name}, "arguments": params})


def with_tools(messages: list[dict], tool_plan: ToolPlan) -> list[dict]:
    """The messages with the tools described in the system turn (one is added if needed)."""
    text = tool_plan.system_text()
    if messages and messages[0]["role"] == "system":
        first = {**messages[0], "content": f"{messages[0]['content']}\n\n{text}".strip()}
        return [first, *messages[1:]]
    return [{"role": "system", "content": text}, *messages]


@dataclass
class ToolAnswer:
    """The model's JSON, read back: either `content` or `tool_calls` (OpenAI's shape)."""

    content: str | None
    tool_calls: list[dict] | None


def read_answer(text: str) -> ToolAnswer:
    """Parse what the grammar let the model write. ValueError if it was cut short."""
    data = json.loads(text)
    if "answer" in data:
        return ToolAnswer(data["answer"], None)
    calls = [
        {
            "id": f"call_{uuid.uuid4().hex[:24]}",
            "type": "function",
            "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])},
        }
        for c in data["tool_calls"]
    ]
    return ToolAnswer(None, calls)


ANSWER_START = re.compile(r'^\s*\{\s*"answer"\s*:\s*"')
CALLS_START = re.compile(r'^\s*\{\s*"tool_calls"')


class AnswerReader:
    """Reads the model's JSON as it is written: the text of an {"answer": ...} is passed on
    as it grows (so answers still stream); tool calls are read once the JSON is complete."""

    def __init__(self) -> None:
        self.buffer = ""
        self.kind: str | None = None  # "answer" | "calls", once the JSON's start shows it
        self._start = 0
        self.answer = ""  # the answer text so far

    def feed(self, piece: str) -> str:
        """Add a piece of the model's output; returns the answer text it completed."""
        self.buffer += piece
        if self.kind is None:
            if m := ANSWER_START.match(self.buffer):
                self.kind, self._start = "answer", m.end()
            elif CALLS_START.match(self.buffer):
                self.kind = "calls"
        if self.kind != "answer":
            return ""
        text = json.loads('"' + _complete_prefix(self.buffer[self._start :]) + '"')
        new, self.answer = text[len(self.answer) :], text
        return new

    def result(self) -> ToolAnswer | None:
        """The whole answer, or None if the JSON was cut short (finish_reason "length")."""
        try:
            return read_answer(self.buffer)
        except (ValueError, KeyError, TypeError):
            return None


def _complete_prefix(s: str) -> str:
    """The longest start of a JSON string's body that holds only whole characters: stops at
    the closing quote and before an escape that is not complete yet."""
    i = 0
    while i < len(s):
        if s[i] == '"':
            break
        if s[i] == "\\":
            size = 6 if s[i + 1 : i + 2] == "u" else 2
            if s[i + 1 : i + 2] == "u" and s[i + 2 : i + 4].upper() in ("D8", "D9", "DA", "DB"):
                size = 12  # a surrogate pair: both halves or neither
            if i + size > len(s):
                break
            i += size
        else:
            i += 1
    return s[:i]


def call_deltas(calls: list[dict]) -> list[list[dict]]:
    """A stream's tool_calls deltas, as OpenAI sends them: for each call first its index, id,
    type and name (arguments ""), then its arguments in pieces."""
    deltas = []
    for index, call in enumerate(calls):
        head = {"name": call["function"]["name"], "arguments": ""}
        deltas.append([{"index": index, "id": call["id"], "type": "function", "function": head}])
        arguments = call["function"]["arguments"]
        step = max(1, -(-len(arguments) // 3))  # a few fragments, as a real stream has
        for start in range(0, len(arguments), step):
            fragment = {"arguments": arguments[start : start + step]}
            deltas.append([{"index": index, "function": fragment}])
    return deltas
