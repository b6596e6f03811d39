"""Clients for the active backend: azure-ai-inference (the seed's SDK) and the OpenAI SDK.

`connect()` is what a lesson calls first: it reads the settings and, for the local backend,
makes sure the embedded server runs. The lesson then builds its own client in plain sight
from `settings.endpoint`, `settings.model` and `settings.credential_key`; `chat_client()` and
`openai_client()` are the same in one line, for code that is not about the SDK.
"""

from __future__ import annotations

from .config import Settings, load_settings
from .local import ensure_local_server, url_of


def connect(settings: Settings | None = None) -> Settings:
    """Settings with a reachable endpoint: for `local`, the server is found or started."""
    settings = settings or load_settings()
    if settings.backend != "local":
        return settings
    state = ensure_local_server(settings)
    return settings.with_endpoint(url_of(state), model=state.get("model"))


def chat_client(settings: Settings | None = None, **kwargs):
    """An azure.ai.inference.ChatCompletionsClient for the active backend."""
    from azure.ai.inference import ChatCompletionsClient
    from azure.core.credentials import AzureKeyCredential

    settings = connect(settings)
    return ChatCompletionsClient(
        endpoint=settings.endpoint,
        credential=AzureKeyCredential(settings.credential_key),
        **kwargs,
    )


def openai_client(settings: Settings | None = None, **kwargs):
    """An openai.OpenAI client for the active backend's OpenAI-compatible endpoint."""
    from openai import OpenAI

    settings = connect(settings)
    return OpenAI(base_url=settings.openai_base_url, api_key=settings.credential_key, **kwargs)
