"""phihelpers.server.params: a chat request's fields mapped onto llama.cpp's parameters."""

from __future__ import annotations

import pytest

from phihelpers.server.errors import ApiError
from phihelpers.server.params import DEFAULT_TEMPERATURE, DEFAULT_TOP_P, generation_params
from phihelpers.server.schema import ChatRequest

HI = [{"role": "user", "content": "hi"}]


def params(n_ctx=4096, default_max_tokens=1024, **body):
    return generation_params(ChatRequest(messages=HI, **body), n_ctx, default_max_tokens)


def test_defaults_are_llama_cpps_and_the_servers_answer_cap():
    p = params()
    assert (p.temperature, p.top_p) == (DEFAULT_TEMPERATURE, DEFAULT_TOP_P)
    assert p.max_tokens == 1024 and p.stop == [] and p.seed is None
    assert (p.presence_penalty, p.frequency_penalty) == (0.0, 0.0)


def test_given_fields_are_passed_on():
    p = params(temperature=0.0, top_p=0.5, max_tokens=7, stop="\n", seed=42, presence_penalty=1.5)
    assert (p.temperature, p.top_p, p.max_tokens, p.stop, p.seed) == (0.0, 0.5, 7, ["\n"], 42)
    assert p.presence_penalty == 1.5 and p.frequency_penalty == 0.0


def test_max_completion_tokens_wins_over_max_tokens():
    assert params(max_tokens=50, max_completion_tokens=5).max_tokens == 5


def test_an_explicit_max_tokens_may_exceed_the_default_cap_but_not_the_window():
    assert params(default_max_tokens=5, max_tokens=100).max_tokens == 100
    with pytest.raises(ApiError) as caught:
        params(n_ctx=512, max_tokens=513)
    assert caught.value.status == 400 and "context window (512 tokens)" in caught.value.message


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"stop": ["a", "b", "c", "d", "e"]}, "at most 4"),
        ({"stop": [""]}, "non-empty"),
        ({"logprobs": True}, "logprobs is not supported"),
        ({"logit_bias": {"1": 2}}, "logit_bias is not supported"),
        ({"response_format": {"type": "json_schema"}}, "needs a json_schema object"),
    ],
)
def test_fields_that_cannot_be_honoured_are_a_400_that_says_why(body, words):
    with pytest.raises(ApiError) as caught:
        params(**body)
    assert caught.value.status == 400 and words in caught.value.message


def test_an_image_part_is_refused_with_a_sentence():
    req = ChatRequest(
        messages=[
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:x"}}]}
        ]
    )
    with pytest.raises(ApiError) as caught:
        generation_params(req, 4096, 1024)
    assert caught.value.status == 400 and "reads text only" in caught.value.message
