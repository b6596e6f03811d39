"""Helpers for the Phi quick-start notebooks.

    from phihelpers import connect
    settings = connect()      # reads PHI_BACKEND & co; starts the local model server if needed
    settings.endpoint, settings.model, settings.credential_key

The lessons then build their ChatCompletionsClient (or OpenAI client) in plain sight.
"""

from .clients import chat_client, connect, openai_client
from .config import BackendRetiredError, ConfigError, Settings, load_settings
from .local import LocalServerError, ensure_local_server, stop_local_server

__all__ = [
    "BackendRetiredError",
    "ConfigError",
    "LocalServerError",
    "Settings",
    "chat_client",
    "connect",
    "ensure_local_server",
    "load_settings",
    "openai_client",
    "stop_local_server",
]
