"""Tool calling through the real clients: azure-ai-inference (sync and async) and openai.

The model's choices are not asserted (a 135M model often picks the wrong city); the protocol
is: the shape of tool_calls, finish_reason, the stream's deltas, and that every call's
arguments parse and validate against the function's declared parameters.
"""

from __future__ import annotations

import asyncio
import json

import jsonschema
import pytest
from azure.ai.inference import ChatCompletionsClient
from azure.ai.inference.aio import ChatCompletionsClient as AsyncChatCompletionsClient
from azure.ai.inference.models import (
    AssistantMessage,
    ChatCompletionsNamedToolChoice,
    ChatCompletionsNamedToolChoiceFunction,
    ChatCompletionsToolChoicePreset,
    ChatCompletionsToolDefinition,
    CompletionsFinishReason,
    FunctionDefinition,
    SystemMessage,
    ToolMessage,
    UserMessage,
)
from azure.core.credentials import AzureKeyCredential

FLIGHT_PARAMETERS = {
    "type": "object",
    "properties": {
        "origin_city": {"type": "string", "description": "The city the flight starts in"},
        "destination_city": {"type": "string", "description": "The city the flight ends in"},
    },
    "required": ["origin_city", "destination_city"],
}
TIME_PARAMETERS = {
    "type": "object",
    "properties": {"timezone": {"type": "string", "enum": ["UTC", "CET", "PST"]}},
    "required": ["timezone"],
}
FLIGHT = FunctionDefinition(
    name="get_flight_info",
    description="Returns information about the next flight between two cities.",
    parameters=FLIGHT_PARAMETERS,
)
TIME = FunctionDefinition(
    name="get_time", description="The current time in a time zone.", parameters=TIME_PARAMETERS
)
SCHEMAS = {"get_flight_info": FLIGHT_PARAMETERS, "get_time": TIME_PARAMETERS}
QUESTION = [
    SystemMessage("You are an assistant that helps users find flight information."),
    UserMessage("I'm interested in going to Miami. What is the next flight there from Seattle?"),
]
OPENAI_TOOLS = [
    {"type": "function", "function": {"name": f.name, "description": f.description,
                                      "parameters": f.parameters}}
    for f in (FLIGHT, TIME)
]  # fmt: skip


@pytest.fixture(scope="module")
def client(settings):
    with ChatCompletionsClient(
        endpoint=settings.endpoint, credential=AzureKeyCredential(settings.credential_key)
    ) as c:
        yield c


def assert_valid_call(name: str, arguments: str, allowed=("get_flight_info", "get_time")) -> dict:
    assert name in allowed
    args = json.loads(arguments)
    jsonschema.validate(args, SCHEMAS[name])
    return args


def ask(client, tool_choice, tools=(FLIGHT,), messages=QUESTION, **kw):
    return client.complete(
        messages=list(messages),
        tools=[ChatCompletionsToolDefinition(function=f) for f in tools],
        tool_choice=tool_choice,
        temperature=0,
        max_tokens=120,
        **kw,
    )


def test_required_gives_a_call_whose_arguments_validate(client):
    r = ask(client, ChatCompletionsToolChoicePreset.REQUIRED)
    choice = r.choices[0]
    assert choice.finish_reason == CompletionsFinishReason.TOOL_CALLS
    assert choice.message.content is None and choice.message.tool_calls
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.id.startswith("call_")
    assert_valid_call(call.function.name, call.function.arguments, ("get_flight_info",))


def test_a_named_function_is_the_one_called(client):
    named = ChatCompletionsNamedToolChoice(
        function=ChatCompletionsNamedToolChoiceFunction(name="get_time")
    )
    r = ask(client, named, tools=(FLIGHT, TIME))
    assert r.choices[0].finish_reason == CompletionsFinishReason.TOOL_CALLS
    for call in r.choices[0].message.tool_calls:
        assert_valid_call(call.function.name, call.function.arguments, ("get_time",))


def test_none_answers_in_text_without_calls(client):
    r = ask(client, ChatCompletionsToolChoicePreset.NONE)
    assert r.choices[0].message.tool_calls is None
    assert isinstance(r.choices[0].message.content, str)
    assert r.choices[0].finish_reason in ("stop", "length")


@pytest.mark.parametrize("question", ["Hello! How are you today?", QUESTION[1].content])
def test_auto_either_answers_or_calls_and_both_are_well_formed(client, question):
    r = ask(client, ChatCompletionsToolChoicePreset.AUTO, messages=[UserMessage(question)])
    choice = r.choices[0]
    if choice.finish_reason == CompletionsFinishReason.TOOL_CALLS:
        assert choice.message.content is None
        for call in choice.message.tool_calls:
            assert_valid_call(call.function.name, call.function.arguments)
    else:
        assert choice.finish_reason == "stop" and choice.message.tool_calls is None
        assert isinstance(choice.message.content, str)
        assert not choice.message.content.lstrip().startswith('{"answer"')  # unwrapped


def test_the_round_trip_with_a_tool_message(client):
    first = ask(client, ChatCompletionsToolChoicePreset.REQUIRED)
    call = first.choices[0].message.tool_calls[0]
    result = {"airline": "Delta", "flight_number": "DL123", "flight_time": "10:00AM"}
    history = [
        *QUESTION,
        AssistantMessage(tool_calls=first.choices[0].message.tool_calls),
        ToolMessage(content=json.dumps(result), tool_call_id=call.id),
    ]
    second = ask(client, ChatCompletionsToolChoicePreset.AUTO, messages=history)
    assert second.choices[0].finish_reason in ("stop", "tool_calls", "length")
    assert second.usage.prompt_tokens > first.usage.prompt_tokens  # the history was read
    # Without tools in the follow-up, the answer is text.
    plain = client.complete(messages=history, temperature=0, max_tokens=30)
    assert isinstance(plain.choices[0].message.content, str)


def test_streamed_calls_arrive_as_openai_sends_them(oai):
    stream = oai.chat.completions.create(
        model="any",
        messages=[{"role": m.role, "content": m.content} for m in QUESTION],
        tools=OPENAI_TOOLS[:1],
        tool_choice="required",
        temperature=0,
        max_tokens=120,
        stream=True,
    )
    deltas, finish = [], None
    for chunk in stream:
        if chunk.choices:
            deltas += chunk.choices[0].delta.tool_calls or []
            finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    first = deltas[0]
    assert first.index == 0 and first.id and first.type == "function"
    assert first.function.name == "get_flight_info" and first.function.arguments == ""
    assert all(d.id is None and d.function.name is None for d in deltas[1:] if d.index == 0)
    arguments = "".join(d.function.arguments for d in deltas if d.index == 0)
    assert_valid_call("get_flight_info", arguments)


def test_openai_non_streaming_and_parallel_calls_off(oai):
    r = oai.chat.completions.create(
        model="any",
        messages=[{"role": "user", "content": "What time is it in UTC, and in CET?"}],
        tools=OPENAI_TOOLS,
        tool_choice="required",
        parallel_tool_calls=False,
        temperature=0,
        max_tokens=120,
    )
    calls = r.choices[0].message.tool_calls
    assert r.choices[0].finish_reason == "tool_calls" and len(calls) == 1
    assert_valid_call(calls[0].function.name, calls[0].function.arguments)


def test_an_auto_answer_streams_as_text(oai):
    stream = oai.chat.completions.create(
        model="any",
        messages=[{"role": "user", "content": "Say hello to me."}],
        tools=OPENAI_TOOLS,
        tool_choice="auto",
        temperature=0,
        max_tokens=80,
        stream=True,
    )
    texts, calls, finish = [], [], None
    for chunk in stream:
        if chunk.choices:
            texts.append(chunk.choices[0].delta.content or "")
            calls += chunk.choices[0].delta.tool_calls or []
            finish = chunk.choices[0].finish_reason or finish
    if finish == "tool_calls":
        assert calls and not "".join(texts)
    else:
        assert finish in ("stop", "length") and not calls
        assert '"answer"' not in "".join(texts)


def test_async_client_with_tools(settings):
    async def main():
        async with AsyncChatCompletionsClient(
            endpoint=settings.endpoint, credential=AzureKeyCredential(settings.credential_key)
        ) as c:
            return await c.complete(
                messages=QUESTION,
                tools=[ChatCompletionsToolDefinition(function=FLIGHT)],
                tool_choice=ChatCompletionsToolChoicePreset.REQUIRED,
                temperature=0,
                max_tokens=120,
            )

    r = asyncio.run(main())
    call = r.choices[0].message.tool_calls[0]
    assert_valid_call(call.function.name, call.function.arguments, ("get_flight_info",))


def test_none_after_tool_turns_is_a_plain_answer_not_an_imitated_call(oai):
    history = [
        {"role": "user", "content": "What is the next flight from Seattle to Miami?"},
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_1", "type": "function", "function": {
                "name": "get_flight_info",
                "arguments": '{"origin_city": "Seattle", "destination_city": "Miami"}'}}]},
        {"role": "tool", "tool_call_id": "call_1",
         "content": '{"airline": "Delta", "flight_number": "DL123", "time": "10:00AM"}'},
    ]  # fmt: skip
    r = oai.chat.completions.create(
        model="any",
        messages=history,
        tools=OPENAI_TOOLS[:1],
        tool_choice="none",
        temperature=0,
        max_tokens=80,
    )
    message = r.choices[0].message
    assert message.tool_calls is None and isinstance(message.content, str)
    if r.choices[0].finish_reason == "stop":
        assert '"tool_calls"' not in message.content and '{"answer"' not in message.content
