"""Unit tests for phihelpers/server/schema.py: the chat request body and its error sentences.

In-process and fast: no server, no model. The end-to-end counterpart (every bad body sent to a
real server) is tests/test_server_bad_input.py.
"""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

from phihelpers.server.schema import ChatRequest, describe

HI = [{"role": "user", "content": "Hi"}]


def parse(**fields) -> ChatRequest:
    """A request parsed the way the server parses it: from JSON bytes."""
    return ChatRequest.model_validate_json(json.dumps({"messages": HI, **fields}))


def refusal(body: dict | str | bytes) -> ValidationError:
    raw = body if isinstance(body, str | bytes) else json.dumps(body)
    with pytest.raises(ValidationError) as info:
        ChatRequest.model_validate_json(raw)
    return info.value


def sentence(body: dict | str | bytes) -> str:
    return describe(refusal(body))


# ---------------------------------------------------------------- accepted bodies


def test_minimal_request_has_the_documented_defaults():
    req = parse()
    assert req.model is None
    assert req.stream is False
    assert req.max_tokens is None and req.max_completion_tokens is None
    assert req.temperature is None and req.top_p is None
    assert req.stop is None and req.stop_list() == []
    assert req.n is None and req.seed is None
    assert req.prompt_messages() == [{"role": "user", "content": "Hi"}]


def test_every_field_a_client_sends_is_read():
    req = parse(
        model="phi-4-mini",
        max_tokens=7,
        max_completion_tokens=9,
        temperature=0.5,
        top_p=0.9,
        stop=["\n"],
        seed=42,
        presence_penalty=-1.5,
        frequency_penalty=1.5,
        stream=True,
        stream_options={"include_usage": True},
        n=1,
    )
    assert (req.model, req.max_tokens, req.max_completion_tokens) == ("phi-4-mini", 7, 9)
    assert (req.temperature, req.top_p, req.seed) == (0.5, 0.9, 42)
    assert (req.presence_penalty, req.frequency_penalty) == (-1.5, 1.5)
    assert req.stream is True
    assert req.stream_options is not None and req.stream_options.include_usage is True
    assert req.n == 1
    assert req.stop_list() == ["\n"]


def test_unknown_fields_are_ignored_at_every_level():
    body = {
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "Hi", "cache_control": {"x": 1}}],
                "name": "ada",
            }
        ],
        "extra_parameters": "pass-through",
        "user": "someone",
        "logit_bias": {"50256": -100},
        "stream_options": {"include_usage": True, "future_flag": 1},
    }
    req = ChatRequest.model_validate_json(json.dumps(body))
    assert req.prompt_messages() == [{"role": "user", "content": "Hi"}]
    assert not hasattr(req, "extra_parameters")
    assert "user" not in req.model_dump()


@pytest.mark.parametrize(
    "field, value",
    [("temperature", 1), ("temperature", 0), ("top_p", 1), ("presence_penalty", -2)],
)
def test_a_whole_number_is_a_valid_float(field, value):
    """JSON has one number type: `"temperature": 1` must not be refused as 'not a float'."""
    assert getattr(parse(**{field: value}), field) == value


def test_null_content_is_an_empty_message():
    req = ChatRequest.model_validate_json(
        json.dumps({"messages": [{"role": "assistant", "content": None}, *HI]})
    )
    assert req.prompt_messages() == [
        {"role": "assistant", "content": ""},
        {"role": "user", "content": "Hi"},
    ]


def test_developer_role_is_given_to_the_template_as_system():
    req = ChatRequest.model_validate_json(
        json.dumps(
            {
                "messages": [
                    {"role": "developer", "content": "Be brief."},
                    {"role": "system", "content": "Be kind."},
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello"},
                ]
            }
        )
    )
    assert req.prompt_messages() == [
        {"role": "system", "content": "Be brief."},
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
    ]
    assert req.messages[0].role == "developer"  # the request itself is left as it came


def test_text_parts_are_joined_without_a_separator():
    req = ChatRequest.model_validate_json(
        json.dumps(
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "Hello, "},
                            {"type": "text", "text": "world"},
                            {"type": "text", "text": "!"},
                        ],
                    }
                ]
            }
        )
    )
    assert req.prompt_messages() == [{"role": "user", "content": "Hello, world!"}]


def test_an_empty_list_of_parts_is_an_empty_message():
    req = ChatRequest.model_validate_json(
        json.dumps({"messages": [{"role": "user", "content": []}]})
    )
    assert req.prompt_messages() == [{"role": "user", "content": ""}]


@pytest.mark.parametrize(
    "part",
    [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
        {"type": "audio_url", "audio_url": {"url": "https://example.com/a.wav"}},
        {"type": "file", "file": {"file_id": "f1"}},
    ],
    ids=lambda p: p["type"],
)
def test_image_and_audio_parts_are_understood_then_refused_with_a_sentence(part):
    body = {
        "messages": [
            {"role": "system", "content": "Describe."},
            {"role": "user", "content": [{"type": "text", "text": "What is this?"}, part]},
        ]
    }
    req = ChatRequest.model_validate_json(json.dumps(body))  # valid JSON for the API...
    with pytest.raises(ValueError) as info:
        req.prompt_messages()  # ...but not something a text-only model can read
    assert str(info.value) == (
        f"messages[1].content has a '{part['type']}' part, but the local model reads text only."
    )


# ---------------------------------------------------------------- strict types


@pytest.mark.parametrize(
    "field, value, expected",
    [
        ("temperature", "0.5", "temperature: Input should be a valid number"),
        ("top_p", "1", "top_p: Input should be a valid number"),
        ("presence_penalty", True, "presence_penalty: Input should be a valid number"),
        ("max_tokens", 1.0, "max_tokens: Input should be a valid integer"),
        ("max_tokens", "10", "max_tokens: Input should be a valid integer"),
        ("max_tokens", True, "max_tokens: Input should be a valid integer"),
        ("max_completion_tokens", 2.5, "max_completion_tokens: Input should be a valid integer"),
        ("seed", "42", "seed: Input should be a valid integer"),
        ("n", 1.0, "n: Input should be a valid integer"),
        ("stream", "true", "stream: Input should be a valid boolean"),
        ("stream", 1, "stream: Input should be a valid boolean"),
        ("model", 5, "model: Input should be a valid string"),
        ("stop", 5, "stop: Input should be a valid string, or a valid array"),
    ],
)
def test_no_type_coercion(field, value, expected):
    """strict=True: a string is not a number, 1.0 is not an int, "true" is not a bool."""
    assert sentence({"messages": HI, field: value}) == expected


@pytest.mark.parametrize(
    "messages, expected",
    [
        ("Hi", "messages: Input should be a valid array"),
        ([], "messages: List should have at least 1 item after validation, not 0"),
        ([{"content": "Hi"}], "messages[0].role: Field required"),
    ],
)
def test_messages_must_be_a_non_empty_list_of_messages(messages, expected):
    assert sentence({"messages": messages}) == expected


def test_messages_are_required():
    assert sentence({"model": "x"}) == "messages: Field required"


def test_unknown_role_is_refused():
    error = refusal({"messages": [{"role": "robot", "content": "Hi"}]})
    (err,) = error.errors()
    assert err["type"] == "literal_error"
    assert describe(error) == f"messages[0].role: {err['msg']}"
    for role in ("system", "developer", "user", "assistant"):
        assert f"'{role}'" in describe(error)


def test_unknown_part_type_is_refused_at_validation():
    error = refusal({"messages": [{"role": "user", "content": [{"type": "video"}]}]})
    assert "union_tag_invalid" in [e["type"] for e in error.errors()]
    assert "messages[0].content[0]: Input tag 'video' found using 'type'" in describe(error)


def test_model_name_is_bounded():
    parse(model="m" * 256)
    assert sentence({"messages": HI, "model": "m" * 257}) == (
        "model: String should have at most 256 characters"
    )


# ---------------------------------------------------------------- ranges


@pytest.mark.parametrize(
    "field, good, bad",
    [
        (
            "temperature",
            [0, 0.0, 1.3, 2],
            {-0.1: "greater than or equal to 0", 2.01: "less than or equal to 2"},
        ),
        (
            "top_p",
            [0.01, 0.5, 1],
            {0: "greater than 0", -1: "greater than 0", 1.01: "less than or equal to 1"},
        ),
        (
            "presence_penalty",
            [-2, 0, 2],
            {-2.1: "greater than or equal to -2", 2.1: "less than or equal to 2"},
        ),
        (
            "frequency_penalty",
            [-2, 0, 2],
            {-2.1: "greater than or equal to -2", 2.1: "less than or equal to 2"},
        ),
        (
            "max_tokens",
            [1, 4096],
            {0: "greater than or equal to 1", -5: "greater than or equal to 1"},
        ),
        ("max_completion_tokens", [1], {0: "greater than or equal to 1"}),
        ("n", [1], {0: "greater than or equal to 1", 2: "less than or equal to 1"}),
    ],
)
def test_numeric_ranges(field, good, bad):
    for value in good:
        assert getattr(parse(**{field: value}), field) == value
    for value, bound in bad.items():
        assert sentence({"messages": HI, field: value}) == f"{field}: Input should be {bound}"


# ---------------------------------------------------------------- stop_list


@pytest.mark.parametrize(
    "stop, expected",
    [
        (None, []),
        ("\n", ["\n"]),
        (["a"], ["a"]),
        (["a", "b", "c", "d"], ["a", "b", "c", "d"]),
        ([], []),
    ],
)
def test_stop_list_accepts_up_to_four_strings(stop, expected):
    assert parse(stop=stop).stop_list() == expected


@pytest.mark.parametrize("stop", ["", ["a", ""], ["a", "b", "c", "d", "e"], [""] * 5])
def test_stop_list_refuses_empty_strings_and_more_than_four(stop):
    req = parse(stop=stop)  # the shape is valid; the rule is checked when the stops are read
    with pytest.raises(ValueError) as info:
        req.stop_list()
    assert str(info.value) == "stop takes at most 4 non-empty strings."


def test_stop_must_be_strings():
    error = refusal({"messages": HI, "stop": ["a", 1]})
    assert (
        describe(error)
        == "stop: Input should be a valid string; stop[1]: Input should be a valid string"
    )


# ---------------------------------------------------------------- describe()


@pytest.mark.parametrize(
    "raw, where",
    [
        (b'{"messages": [', "EOF while parsing"),
        (b"", "EOF while parsing"),
        (b"{not json}", "key must be a string"),
        (b'{"messages": []} xyz', "trailing characters"),
    ],
)
def test_invalid_json_is_one_sentence(raw, where):
    error = refusal(raw)
    assert [e["type"] for e in error.errors()] == ["json_invalid"]
    text = describe(error)
    assert text.startswith("The request body is not valid JSON: ")
    assert where in text
    assert "line 1 column" in text
    assert text.endswith(".") and not text.endswith("..")
    assert "\n" not in text


def test_a_body_that_is_not_an_object_is_located_at_body():
    error = refusal(b"[1, 2]")
    assert describe(error) == f"body: {error.errors()[0]['msg']}"


def test_nested_locations_read_like_json_paths():
    body = {
        "messages": [
            {"role": "user", "content": "ok"},
            {"role": "user", "content": "ok"},
            {"role": "user", "content": [{"type": "text", "text": "ok"}, {"type": "sound"}]},
        ]
    }
    text = sentence(body)
    assert "messages[2].content[1]: Input tag 'sound'" in text
    assert "messages.2" not in text and "messages[2].content.1" not in text


def test_union_branch_names_are_dropped():
    """pydantic puts 'str' and 'list[tagged-union[...]]' in the location; the client sent neither."""
    error = refusal({"messages": [{"role": "user", "content": 5}]})
    locs = [e["loc"] for e in error.errors()]
    assert ("messages", 0, "content", "str") in locs  # what pydantic says...
    assert (
        describe(error) == "messages[0].content: Input should be a valid string, or a valid array"
    )


@pytest.mark.parametrize(
    "value, expected",
    [
        ("x", "value: Input should be a valid integer, or a valid number, or a valid boolean"),
        ([1], "value: Input should be a valid integer, or a valid number, or a valid boolean"),
    ],
)
def test_int_float_bool_branches_are_dropped(value, expected):
    class Probe(BaseModel):
        model_config = ConfigDict(strict=True)
        value: int | float | bool

    with pytest.raises(ValidationError) as info:
        Probe.model_validate_json(json.dumps({"value": value}))
    assert [e["loc"][-1] for e in info.value.errors()] == ["int", "float", "bool"]
    assert describe(info.value) == expected


def test_at_most_three_places_then_a_count():
    error = refusal(
        {"messages": HI, "max_tokens": 0, "temperature": 3, "top_p": 0, "seed": "x", "n": 2}
    )
    assert len(error.errors()) == 5
    assert describe(error) == (
        "max_tokens: Input should be greater than or equal to 1; "
        "temperature: Input should be less than or equal to 2; "
        "top_p: Input should be greater than 0 (and 2 more)"
    )


def test_the_limit_is_a_parameter_and_exactly_limit_places_have_no_tail():
    error = refusal({"messages": HI, "max_tokens": 0, "temperature": 3, "top_p": 0})
    assert not describe(error).endswith("more)")
    assert describe(error).count("; ") == 2
    assert (
        describe(error, limit=1)
        == "max_tokens: Input should be greater than or equal to 1 (and 2 more)"
    )
    assert describe(error, limit=10) == describe(error)


def test_the_count_is_of_places_not_of_errors():
    """Two messages about one place (a union's branches) are one place in the count."""
    error = refusal(
        {"messages": [{"role": "user", "content": 5}], "stop": 5, "temperature": 9, "n": 7}
    )
    assert len(error.errors()) == 6
    assert describe(error) == (
        "messages[0].content: Input should be a valid string, or a valid array; "
        "temperature: Input should be less than or equal to 2; "
        "stop: Input should be a valid string, or a valid array (and 1 more)"
    )


def test_the_tag_of_a_tagged_union_is_not_part_of_the_location():
    text = sentence({"messages": [{"role": "user", "content": [{"type": "text"}]}]})
    assert "messages[0].content[0].text: Field required" in text
    assert ".text.text" not in text
