"""A chat request's fields, checked and mapped onto llama.cpp's GenerationParams."""

from __future__ import annotations

from .engine import GenerationParams, schema_to_grammar
from .errors import bad_request
from .schema import ChatRequest
from .structured import response_schema
from .tools import ToolPlan

# llama-cpp-python's defaults, which the OpenAI and Azure APIs leave to the service.
DEFAULT_TEMPERATURE = 0.8
DEFAULT_TOP_P = 0.95


def generation_params(
    req: ChatRequest, n_ctx: int, default_max_tokens: int, tools: ToolPlan | None = None
) -> GenerationParams:
    """GenerationParams for `req` on a model with an `n_ctx`-token window; ApiError 400 if a
    field cannot be honoured. A request without max_tokens gets `default_max_tokens`."""
    max_tokens = req.max_completion_tokens or req.max_tokens
    if max_tokens is None:
        max_tokens = default_max_tokens
    elif max_tokens > n_ctx:
        raise bad_request(
            f"max_tokens={max_tokens} is more than this model's whole context window "
            f"({n_ctx} tokens). Ask for fewer tokens."
        )
    try:
        stop = req.stop_list()
        req.prompt_messages()
    except ValueError as exc:
        raise bad_request(str(exc)) from None
    refuse_unhonoured(req)
    return GenerationParams(
        max_tokens=max_tokens,
        temperature=DEFAULT_TEMPERATURE if req.temperature is None else req.temperature,
        top_p=DEFAULT_TOP_P if req.top_p is None else req.top_p,
        stop=stop,
        seed=req.seed,
        presence_penalty=req.presence_penalty or 0.0,
        frequency_penalty=req.frequency_penalty or 0.0,
        grammar=_grammar(req, tools),
    )


UNHONOURED = {
    "logprobs": "log probabilities are not returned",
    "top_logprobs": "log probabilities are not returned",
    "logit_bias": "token ids differ between tokenizers, so a bias cannot be applied",
    "functions": "use `tools` instead (the older functions API is not supported)",
    "function_call": "use `tool_choice` instead (the older functions API is not supported)",
    "audio": "the local model reads and writes text only",
    "prediction": "predicted outputs are not supported",
    "web_search_options": "the local server cannot search the web",
}


def refuse_unhonoured(req: ChatRequest) -> None:
    """A field the server would otherwise drop silently is refused, saying so."""
    for name, why in UNHONOURED.items():
        if getattr(req, name) not in (None, False, [], {}):
            raise bad_request(f"{name} is not supported by the local server: {why}.")
    if req.modalities and req.modalities != ["text"]:
        raise bad_request("modalities: the local model reads and writes text only.")


def _grammar(req: ChatRequest, tools: ToolPlan | None) -> str | None:
    schema = response_schema(req)
    if tools and schema is not None:
        raise bad_request(
            "Send either tools or a JSON response_format in one request, not both: the local "
            "server constrains an answer to one schema."
        )
    if tools:
        schema = tools.schema
    if schema is None:
        return None
    try:
        return schema_to_grammar(schema)
    except ValueError as exc:
        raise bad_request(str(exc), "unsupported_schema") from None
