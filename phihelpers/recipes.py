"""Named OpenAI-compatible servers (`PHI_BACKEND=ollama | foundry-local | vllm | llama-server`).

The recipes' defaults live in config.RECIPES (pure data). What needs a running program lives
here: Foundry Local serves on a port it picks itself, which `foundry service status` prints,
e.g. "Model management service is running on http://127.0.0.1:51995/openai/status".
"""

from __future__ import annotations

import re
import shutil
import subprocess

from .config import RECIPES, BackendUnreachableError, ConfigError

FOUNDRY_CLI = "foundry"
FOUNDRY_STATUS_TIMEOUT = 30.0
_STATUS_URL = re.compile(r"(https?://[^\s/'\"]+)/openai/status", re.I)
_ANY_URL = re.compile(r"https?://[^\s/'\"]+:\d+", re.I)

_SET_IT_YOURSELF = (
    "Or set OPENAI_BASE_URL yourself to the address `foundry service status` prints, without "
    "its /openai/status and with /v1: for example OPENAI_BASE_URL=http://127.0.0.1:51995/v1."
)


def parse_foundry_status(text: str) -> str | None:
    """Foundry Local's OpenAI base URL (`http://host:port/v1`) from `foundry service status`."""
    match = _STATUS_URL.search(text) or _ANY_URL.search(text)
    if not match:
        return None
    origin = match.group(1) if match.re is _STATUS_URL else match.group(0)
    return origin.rstrip(".,;)") + "/v1"


def foundry_local_base_url(timeout: float = FOUNDRY_STATUS_TIMEOUT) -> str:
    """Ask the `foundry` CLI where Foundry Local serves; a ConfigError says what to do if not."""
    hint = RECIPES["foundry-local"].hint
    cli = shutil.which(FOUNDRY_CLI)
    if cli is None:
        raise ConfigError(
            "PHI_BACKEND=foundry-local: Foundry Local picks its port when it starts, and the "
            f"`{FOUNDRY_CLI}` command that tells it is not on PATH here. To use Foundry Local, "
            f"{hint}. {_SET_IT_YOURSELF}"
        )
    try:
        done = subprocess.run(
            [cli, "service", "status"],
            capture_output=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BackendUnreachableError(
            f"PHI_BACKEND=foundry-local: `{FOUNDRY_CLI} service status` did not answer "
            f"({type(exc).__name__}). Start the service with `foundry service start`. "
            f"{_SET_IT_YOURSELF}"
        ) from None
    text = (done.stdout + b"\n" + done.stderr).decode(errors="replace")
    base = parse_foundry_status(text)
    if base is None:
        said = " ".join(text.split())[:200] or f"nothing (exit code {done.returncode})"
        raise BackendUnreachableError(
            f"PHI_BACKEND=foundry-local: `{FOUNDRY_CLI} service status` printed no address "
            f"(it said: {said}), so Foundry Local's service is probably not running. Start it "
            f"with `foundry service start` or `foundry model run phi-4-mini`. {_SET_IT_YOURSELF}"
        )
    return base
