"""Helpers for the Phi quick-start notebooks.

    from phihelpers import connect
    settings = connect()      # reads PHI_BACKEND & co; starts the local model server if needed
    settings.endpoint, settings.openai_base_url, settings.model, settings.credential_key

The lessons then build their ChatCompletionsClient (or OpenAI client) in plain sight.
Inside IPython/Jupyter, a ConfigError (wrong or retired settings) shows as its message only.

The client helpers (phihelpers.clients, phihelpers.local) are imported when first used: they
bring httpx and the launcher, which `python -m phihelpers serve` (the server process, whose
start-up time is measured: benchmarks/bench_cold_start.py) does not need.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from .config import (
    RECIPES,
    BackendRetiredError,
    BackendUnreachableError,
    ConfigError,
    Settings,
    load_settings,
)
from .notebook import install as _install_notebook_errors
from .state import LocalServerError

if TYPE_CHECKING:
    from .clients import chat_client, connect, discover_model, list_models, openai_client
    from .local import ensure_local_server, stop_local_server

_LAZY = {
    "chat_client": "clients",
    "connect": "clients",
    "discover_model": "clients",
    "list_models": "clients",
    "openai_client": "clients",
    "ensure_local_server": "local",
    "stop_local_server": "local",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


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
