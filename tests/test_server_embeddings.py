"""Embeddings through the real clients: azure-ai-inference (sync and async) and openai."""

from __future__ import annotations

import asyncio
import base64
import math
import struct

import httpx
import pytest
from azure.ai.inference import EmbeddingsClient
from azure.ai.inference.aio import EmbeddingsClient as AsyncEmbeddingsClient
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import HttpResponseError
from openai import BadRequestError

TEXTS = ["The capital of France is Paris.", "Streaming sends the answer in pieces."]


def norm(vector) -> float:
    return math.sqrt(sum(x * x for x in vector))


@pytest.fixture(scope="module")
def azure(settings):
    with EmbeddingsClient(
        endpoint=settings.endpoint, credential=AzureKeyCredential(settings.credential_key)
    ) as c:
        yield c


def test_azure_client_gets_unit_vectors_and_usage(azure, settings):
    r = azure.embed(input=TEXTS, model="text-embedding-3-small")
    assert [d.index for d in r.data] == [0, 1]
    dims = {len(d.embedding) for d in r.data}
    assert len(dims) == 1 and dims.pop() > 0
    assert all(abs(norm(d.embedding) - 1) < 1e-4 for d in r.data)
    assert r.usage.prompt_tokens > 0 and r.usage.total_tokens == r.usage.prompt_tokens
    assert r.model == "all-MiniLM-L6-v2"  # the model that really embedded, not the one asked for


def test_dimensions_keeps_a_unit_vector_of_that_size(azure):
    full = azure.embed(input=TEXTS[:1]).data[0].embedding
    short = azure.embed(input=TEXTS[:1], dimensions=64).data[0].embedding
    assert len(short) == 64 and abs(norm(short) - 1) < 1e-4
    scale = norm(full[:64])  # the first 64 of the full vector, scaled back to unit length
    assert all(abs(a - b / scale) < 1e-4 for a, b in zip(short, full[:64], strict=True))


def test_openai_default_base64_and_float_agree(oai):
    default = oai.embeddings.create(model="text-embedding-3-small", input=TEXTS)
    floats = oai.embeddings.create(model="any", input=TEXTS, encoding_format="float")
    for a, b in zip(default.data, floats.data, strict=True):
        assert len(a.embedding) == len(b.embedding)
        assert all(abs(x - y) < 1e-5 for x, y in zip(a.embedding, b.embedding, strict=True))


def test_base64_is_little_endian_float32(endpoint):
    body = {"input": "hello", "encoding_format": "base64"}
    raw = httpx.post(endpoint + "/v1/embeddings", json=body, timeout=60).json()
    blob = base64.b64decode(raw["data"][0]["embedding"])
    vector = struct.unpack(f"<{len(blob) // 4}f", blob)
    assert abs(norm(vector) - 1) < 1e-4 and raw["object"] == "list"


def test_similar_texts_are_closer_than_unrelated_ones(oai):
    data = oai.embeddings.create(
        model="any",
        input=["How do I stream an answer?", "Streaming sends the answer piece by piece.",
               "Bananas are yellow fruit."],
        encoding_format="float",
    ).data  # fmt: skip
    q, near, far = (d.embedding for d in data)
    cos = lambda a, b: sum(x * y for x, y in zip(a, b, strict=True))  # noqa: E731 (unit vectors)
    assert cos(q, near) > cos(q, far)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"input": []}, "input is empty"),
        ({"input": ""}, "empty string"),
        ({"input": ["ok", ""]}, "input[1] is an empty string"),
        ({"input": [1, 2, 3]}, "valid string"),
        ({"input": "x", "dimensions": 100_000}, "dimensions=100000 is more than"),
        ({"input": "x", "dimensions": 0}, "dimensions"),
        ({"input": "x", "encoding_format": "int8"}, "encoding_format"),
        ({"input": "hello " * 2000}, "split the text"),
    ],
)
def test_bad_input_is_a_400_that_says_why(endpoint, body, words):
    r = httpx.post(endpoint + "/embeddings", json=body, timeout=60)
    assert r.status_code == 400 and "retry-after" not in r.headers
    assert words in r.json()["error"]["message"]


def test_the_clients_show_the_servers_sentence(azure, oai):
    with pytest.raises(HttpResponseError) as caught:
        azure.embed(input=["x"], dimensions=100_000)
    assert caught.value.status_code == 400 and "dimensions" in str(caught.value)
    with pytest.raises(BadRequestError):
        oai.embeddings.create(model="any", input=[])


def test_async_client(settings):
    async def main():
        async with AsyncEmbeddingsClient(
            endpoint=settings.endpoint, credential=AzureKeyCredential(settings.credential_key)
        ) as c:
            return await c.embed(input=TEXTS)

    assert len(asyncio.run(main()).data) == 2
