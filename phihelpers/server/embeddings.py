"""POST /embeddings (azure-ai-inference EmbeddingsClient) and /v1/embeddings (openai).

Vectors come from llama.cpp (engine.Embedder), unit length. `dimensions` smaller than the
model's keeps the first ones and scales the vector back to unit length (what OpenAI's
text-embedding-3 models do); larger is a 400. `encoding_format: "base64"` (openai-python asks
for it whenever its caller gives none) is the little-endian float32 bytes, base64-encoded.
Any `model` name is accepted; the answer's `model` says which model really embedded.
"""

from __future__ import annotations

import base64
import math
import struct
import uuid

from fastapi import APIRouter, Depends, Request
from pydantic import ValidationError

from .bridge import on_engine
from .errors import bad_request
from .guards import authenticate, check_content_type, read_body
from .schema import EmbeddingsRequest, describe

EMBEDDING_PATHS = ("/embeddings", "/v1/embeddings", "/models/embeddings", "/openai/v1/embeddings")

router = APIRouter()


def shorten(vector: list[float], dimensions: int | None) -> list[float]:
    if dimensions is None or dimensions >= len(vector):
        return vector
    head = vector[:dimensions]
    norm = math.sqrt(sum(x * x for x in head)) or 1.0
    return [x / norm for x in head]


def encode(vector: list[float], encoding_format: str | None) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    return vector


async def embeddings(request: Request, caller: str = Depends(authenticate)) -> dict:
    state = request.app.state
    check_content_type(request)
    body = await read_body(request, state.settings.max_body_bytes)
    try:
        req = EmbeddingsRequest.model_validate_json(body)
        texts = req.texts()
    except ValidationError as exc:
        raise bad_request(describe(exc)) from None
    except ValueError as exc:
        raise bad_request(str(exc)) from None

    def work():
        embedder = state.models.embedder()
        if req.dimensions is not None and req.dimensions > embedder.dimensions:
            raise ValueError(
                f"dimensions={req.dimensions} is more than this embedding model has "
                f"({embedder.name}: {embedder.dimensions}). Ask for at most that many."
            )
        vectors, tokens = embedder.embed(texts)
        return embedder.name, vectors, tokens

    name, vectors, tokens = await on_engine(state, caller, work)
    state.usage.add_tokens(caller, tokens)  # the usage table (admin.py)
    data = [
        {
            "object": "embedding",
            "index": i,
            "embedding": encode(shorten(v, req.dimensions), req.encoding_format),
        }
        for i, v in enumerate(vectors)
    ]
    return {
        "id": f"embd-{uuid.uuid4().hex}",
        "object": "list",
        "data": data,
        "model": name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


for _path in EMBEDDING_PATHS:
    router.add_api_route(
        _path,
        embeddings,
        methods=["POST"],
        include_in_schema=_path in ("/embeddings", "/v1/embeddings"),
    )
