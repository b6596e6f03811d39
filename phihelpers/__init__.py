"""Helpers for the Phi quick-start notebooks.

    from phihelpers import connect
    settings = connect()      # reads PHI_BACKEND & co; starts the local model server if needed
    settings.endpoint, settings.openai_base_url, settings.model, settings.credential_key

The lessons then build their ChatCompletionsClient (or OpenAI client) in plain sight.
Inside IPython/Jupyter, a ConfigError (wrong or retired settings) shows as its message only.
"""

from .clients import chat_client, connect, discover_model, list_models, openai_client
from .config import (
    RECIPES,
    BackendRetiredError,
    BackendUnreachableError,
    ConfigError,
    Settings,
    load_settings,
)
from .local import LocalServerError, ensure_local_server, stop_local_server
from .notebook import install as _install_notebook_errors

__all__ = [
    "RECIPES",
    "BackendRetiredError",
    "BackendUnreachableError",
    "ConfigError",
    "LocalServerError",
    "Settings",
    "chat_client",
    "connect",
    "discover_model",
    "ensure_local_server",
    "list_models",
    "load_settings",
    "openai_client",
    "stop_local_server",
]

_install_notebook_errors()
