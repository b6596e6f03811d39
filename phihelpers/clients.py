"""Clients for the active backend: azure-ai-inference (the seed's SDK) and the OpenAI SDK.

`connect()` is what a lesson calls first: it reads the settings and makes them usable:
- `local`: the embedded server is found or started;
- `openai` (and the recipes): Foundry Local's port is found with `foundry service status`;
  without PHI_MODEL the server is asked `GET {base}/models`, and the one model it lists is
  the model (several: a ConfigError names them);
- `azure` without a key: a Microsoft Entra ID token is fetched once through azure-identity
  (`DefaultAzureCredential`, or the credential passed in) and becomes `credential_key`.

The lesson then builds its own client in plain sight from `settings.endpoint` (or
`settings.openai_base_url`), `settings.model` and `settings.credential_key`; `chat_client()` and
`openai_client()` are the same in one line, for code that is not about the SDK.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from .config import (
    AZURE_TOKEN_SCOPE,
    BackendUnreachableError,
    ConfigError,
    Settings,
    load_settings,
)
from .local import ensure_local_server, url_of

DISCOVERY_TIMEOUT = 10.0
MODELS_SHOWN = 12


def connect(settings: Settings | None = None, *, credential: Any = None) -> Settings:
    """Settings with a reachable endpoint, a model name and a credential_key.

    `credential`: an azure-identity credential for keyless azure (tests pass a fake one);
    default DefaultAzureCredential.
    """
    settings = settings or load_settings(credential=credential)
    if credential is not None and settings.keyless and settings.credential is not credential:
        settings = replace(settings, credential=credential, token_provider=None, api_key="")
    if settings.backend == "local":
        state = ensure_local_server(settings)
        return settings.with_endpoint(url_of(state), model=state.get("model"))
    if settings.backend == "azure" and settings.keyless and settings.token_provider is None:
        settings = _with_entra_token(settings)
    if settings.backend == "openai":
        if not settings.openai_base_url:  # Foundry Local: its port is dynamic
            from .recipes import foundry_local_base_url

            base = foundry_local_base_url()
            settings = replace(settings, endpoint=base, openai_base_url=base)
        if not settings.model:
            settings = replace(settings, model=discover_model(settings))
    return settings


def _label(settings: Settings) -> str:
    return f"PHI_BACKEND={settings.recipe or settings.backend}"


def _url_hint(settings: Settings) -> tuple[str, str]:
    """The variable that holds the base URL, and an example of its shape."""
    if settings.backend == "azure":
        return "AZURE_OPENAI_ENDPOINT", "https://<resource>.openai.azure.com/openai/v1/"
    return "OPENAI_BASE_URL", "http://localhost:11434/v1"


def _auth_headers(settings: Settings) -> dict[str, str]:
    if settings.backend == "local" or (settings.backend == "azure" and settings.key_is_set):
        key = settings.api_key  # both headers, as azure-ai-inference sends them
        return {"api-key": key, "Authorization": f"Bearer {key}"} if key else {}
    if settings.key_is_set or settings.keyless:
        return {"Authorization": f"Bearer {settings.credential_key}"}
    return {}


def list_models(
    settings: Settings, timeout: float = DISCOVERY_TIMEOUT, for_model: bool = False
) -> list[str]:
    """The model ids the server lists on `GET {openai_base_url}/models`, in its order.

    A BackendUnreachableError says what to check when nothing (or not a model list) answers;
    `for_model`: the list is asked for to find the model, so PHI_MODEL is a way out.
    """
    import httpx

    base = settings.openai_base_url.rstrip("/")
    url = f"{base}/models"
    label = _label(settings)
    var, example = _url_hint(settings)
    way_out = (
        ", or set PHI_MODEL to the model's name so that the server need not be asked"
        if for_model
        else ""
    )
    try:
        r = httpx.get(url, headers=_auth_headers(settings), timeout=timeout)
    except httpx.HTTPError as exc:
        raise BackendUnreachableError(
            f"{label}: nothing answered at {url} ({type(exc).__name__}: {exc}). Check that the "
            f"server is running and that {var}={base} is its OpenAI-compatible base URL: host, "
            f"port and path (for example {example})."
        ) from None
    if r.status_code in (401, 403):
        raise BackendUnreachableError(
            f"{label}: the server at {base} refused the key (HTTP {r.status_code} to GET /models)."
            f" Set {'AZURE_OPENAI_API_KEY' if settings.backend == 'azure' else 'OPENAI_API_KEY'}"
            " to the key it expects."
        )
    if r.status_code != 200:
        said = " ".join(r.text.split())
        said = said if len(said) <= 160 else said[:159] + "…"
        raise BackendUnreachableError(
            f"{label}: GET {url} answered HTTP {r.status_code} ({said}). "
            f"Check {var} (it looks like {example}){way_out}."
        )
    try:
        data = r.json()["data"]
        ids = [m["id"] for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]
    except (ValueError, KeyError, TypeError):
        raise BackendUnreachableError(
            f"{label}: GET {url} did not answer with an OpenAI model list. Check that {var} is "
            f"the server's OpenAI-compatible base URL (it looks like {example}){way_out}."
        ) from None
    return ids


def discover_model(settings: Settings) -> str:
    """The one model the server serves; a ConfigError when it lists none or several."""
    ids = list_models(settings, for_model=True)
    base = settings.openai_base_url.rstrip("/")
    if len(ids) == 1:
        return ids[0]
    if not ids:
        raise ConfigError(
            f"{_label(settings)}: the server at {base} lists no model on GET /models. Load one "
            "into it (Ollama: `ollama pull phi4-mini`; Foundry Local: `foundry model run "
            "phi-4-mini`), or set PHI_MODEL to the model's name."
        )
    shown = ", ".join(ids[:MODELS_SHOWN])
    if len(ids) > MODELS_SHOWN:
        shown += f" and {len(ids) - MODELS_SHOWN} more"
    raise ConfigError(
        f"{_label(settings)}: the server at {base} serves {len(ids)} models: {shown}. Set "
        f"PHI_MODEL to the one the lessons should use, for example PHI_MODEL={ids[0]}."
    )


def _with_entra_token(settings: Settings) -> Settings:
    """Keyless azure: a token provider from the credential, and one token for credential_key."""
    try:
        from azure.identity import get_bearer_token_provider
    except ImportError:
        raise ConfigError(
            "PHI_BACKEND=azure without a key signs in with Microsoft Entra ID through the "
            "azure-identity package, which is not installed: `pip install azure-identity` (it is "
            "in requirements.txt), or set AZURE_OPENAI_API_KEY."
        ) from None
    credential = settings.credential
    if credential is None:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
    provider = get_bearer_token_provider(credential, AZURE_TOKEN_SCOPE)
    # azure-identity logs each failed attempt as a warning; the error below says it once.
    quiet = logging.getLogger("azure.identity")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        token = provider()
    except Exception as exc:  # azure-identity raises several kinds; all mean "no sign-in"
        lines = str(exc).strip().splitlines() or [""]
        said = lines[0] if len(lines[0]) <= 200 else lines[0][:199] + "…"
        raise ConfigError(
            "PHI_BACKEND=azure without a key signs in with Microsoft Entra ID (through "
            f"{type(credential).__name__}), and that failed: {type(exc).__name__}: {said} "
            "Sign in with `az login` (or `azd auth login`), make sure your identity has the "
            "Cognitive Services OpenAI User role on the Foundry resource, or set "
            "AZURE_OPENAI_API_KEY to the resource's key."
        ) from None
    finally:
        quiet.setLevel(level)
    return replace(settings, credential=credential, token_provider=provider, api_key=token)


def chat_client(settings: Settings | None = None, *, credential: Any = None, **kwargs):
    """An azure.ai.inference.ChatCompletionsClient for the active backend."""
    from azure.ai.inference import ChatCompletionsClient
    from azure.core.credentials import AzureKeyCredential

    settings = connect(settings, credential=credential)
    return ChatCompletionsClient(
        endpoint=settings.endpoint,
        credential=AzureKeyCredential(settings.credential_key),
        **kwargs,
    )


def openai_client(settings: Settings | None = None, *, credential: Any = None, **kwargs):
    """An openai.OpenAI client for the active backend's OpenAI-compatible endpoint.

    Keyless azure: `api_key` is the token provider (a callable; openai >= 1.106), so the
    token is refreshed before it expires.
    """
    from openai import OpenAI

    settings = connect(settings, credential=credential)
    api_key = settings.token_provider or settings.credential_key
    return OpenAI(base_url=settings.openai_base_url, api_key=api_key, **kwargs)
