"""Structured output through the real clients, and the schema check that guards the grammar.

The guarantee: every answer that ends with finish_reason "stop" parses and validates against
the schema it was asked for, at any temperature, because a llama.cpp grammar built from the
schema constrained every token.
"""

from __future__ import annotations

import json
from typing import Literal

import jsonschema
import pytest
from azure.ai.inference import ChatCompletionsClient
from azure.ai.inference.models import JsonSchemaFormat, UserMessage
from azure.core.credentials import AzureKeyCredential
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from phihelpers.server import tools
from phihelpers.server.errors import ApiError
from phihelpers.server.params import generation_params
from phihelpers.server.schema import ChatRequest

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "age": {"type": "integer"},
        "city": {"type": "string", "enum": ["Paris", "Oslo", "Lima"]},
        "likes_tea": {"type": "boolean"},
        "pets": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 3},
    },
    "required": ["name", "age", "city", "likes_tea", "pets"],
    "additionalProperties": False,
}
ASK = "Invent a person and describe them as JSON."
# Small, and every string and list bounded, so that twenty answers at temperature 1 are quick
# and end within max_tokens.
BADGE = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 10},
        "city": {"type": "string", "enum": ["Paris", "Oslo", "Lima"]},
        "age": {"type": "integer"},
        "likes_tea": {"type": "boolean"},
    },
    "required": ["name", "city", "age", "likes_tea"],
    "additionalProperties": False,
}


def test_twenty_answers_at_temperature_one_all_validate(oai):
    finished = 0
    for seed in range(20):
        r = oai.chat.completions.create(
            model="any",
            messages=[{"role": "user", "content": ASK}],
            response_format={"type": "json_schema",
                             "json_schema": {"name": "badge", "schema": BADGE, "strict": True}},
            temperature=1.0,
            seed=seed,
            max_tokens=60,
        )  # fmt: skip
        choice = r.choices[0]
        assert choice.finish_reason in ("stop", "length")
        if choice.finish_reason == "stop":
            jsonschema.validate(json.loads(choice.message.content), BADGE)
            finished += 1
    assert finished >= 15  # bounded strings: answers end (an integer may still run long)


def test_json_object_mode_gives_an_object(oai):
    r = oai.chat.completions.create(
        model="any",
        messages=[{"role": "user", "content": "Give me a JSON object about the moon."}],
        response_format={"type": "json_object"},
        temperature=0,
        max_tokens=80,
    )
    if r.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(r.choices[0].message.content), dict)
    else:  # cut short: what there is starts like an object
        assert r.choices[0].message.content.lstrip().startswith("{")


class Person(BaseModel):
    name: str = Field(max_length=24)
    city: Literal["Paris", "Oslo", "Lima"]
    likes_tea: bool


def test_openai_parse_with_a_pydantic_model(oai):
    r = oai.chat.completions.parse(
        model="any",
        messages=[{"role": "user", "content": ASK}],
        response_format=Person,
        temperature=0.7,
        max_tokens=80,
    )
    assert isinstance(r.choices[0].message.parsed, Person)


def test_azure_json_schema_format_and_streaming(settings):
    with ChatCompletionsClient(
        endpoint=settings.endpoint, credential=AzureKeyCredential(settings.credential_key)
    ) as client:
        fmt = JsonSchemaFormat(name="person", schema=PERSON, strict=True)
        r = client.complete(messages=[UserMessage(ASK)], response_format=fmt, max_tokens=160)
        assert r.choices[0].finish_reason == "stop"
        jsonschema.validate(json.loads(r.choices[0].message.content), PERSON)
        text = "".join(
            u.choices[0].delta.content or ""
            for u in client.complete(
                messages=[UserMessage(ASK)], response_format=fmt, max_tokens=160, stream=True
            )
            if u.choices
        )
    jsonschema.validate(json.loads(text), PERSON)


def test_a_keyword_the_grammar_cannot_enforce_is_named_in_a_400(oai):
    import openai

    with pytest.raises(openai.BadRequestError) as caught:
        oai.chat.completions.create(
            model="any",
            messages=[{"role": "user", "content": ASK}],
            response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": {
                "type": "object", "properties": {"age": {"type": "integer", "minimum": 0}}}}},
        )  # fmt: skip
    assert "'minimum'" in str(caught.value) and "properties.age" in str(caught.value)


# -- the check in front of the grammar, fuzzed in-process -------------------------------------

KEYS = st.sampled_from(
    ["type", "properties", "items", "required", "enum", "const", "anyOf", "oneOf", "$ref",
     "pattern", "format", "minItems", "maxItems", "minLength", "additionalProperties", "$defs",
     "prefixItems", "title", "minimum", "x"]
)  # fmt: skip
LEAF = (
    st.none()
    | st.booleans()
    | st.integers(-3, 5)
    | st.sampled_from(["string", "object", "array", "integer", "#/$defs/a", "^a$", "date", "a"])
)
SCHEMAS = st.recursive(
    LEAF, lambda c: st.lists(c, max_size=3) | st.dictionaries(KEYS, c, max_size=4), max_leaves=14
)


@hsettings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(SCHEMAS)
def test_any_schema_is_a_grammar_or_a_400_never_a_crash(schema):
    for body in (
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "n", "schema": schema},
            }
        },
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": schema}}]},
    ):
        try:
            req = ChatRequest.model_validate(
                {"messages": [{"role": "user", "content": "x"}], **body}
            )
        except ValueError:
            continue  # refused by validation: a 400 too
        try:
            generation_params(req, 4096, 16, tools.plan(req))
        except ApiError as exc:
            assert exc.status == 400
