"""`python -m phihelpers doctor`: what the lessons would use, and whether it answers.

Never prints a key, only whether one is set. Wrong or retired settings are answered with the
ConfigError's paragraph (what to set instead), never a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .config import ConfigError, Settings, load_settings
from .local import LocalServerError, ensure_local_server, running_server, url_of

PROBE_TIMEOUT = 10.0


def _key_line(settings: Settings) -> str:
    if settings.keyless:
        return "not set (keyless: a Microsoft Entra ID token from azure-identity)"
    return "set" if settings.key_is_set else "not set"


def doctor(start: bool = False, quiet_check: bool = False) -> int:
    """Print what the lessons would use, and whether it answers. Never prints a key."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"configuration problem:\n{exc}")
        return 1
    if quiet_check:  # used by setup: only check that the package and model are in place
        if settings.backend == "local":
            from .server.engine import ModelFileError, check_model_file, default_model_path

            try:
                path = (
                    Path(settings.local_model_path)
                    if settings.local_model_path
                    else default_model_path()
                )
                check_model_file(path)
            except ModelFileError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
            print(f"local model: {path}")
        return 0
    print(f"backend:   {settings.backend}")
    if settings.recipe:
        print(f"recipe:    {settings.recipe}")
    if settings.backend == "local":
        return _local(settings, start)
    return _remote(settings)


def _local(settings: Settings, start: bool) -> int:
    try:
        state = running_server(settings)
        if state is None and start:
            state = ensure_local_server(settings)
    except LocalServerError as exc:
        print(f"server:    failed to start:\n{exc}")
        return 1
    if state is None:
        print("server:    not running (it starts on first use; `python -m phihelpers start`)")
        return 0
    endpoint = url_of(state)
    print(f"endpoint:  {endpoint}   (pid {state['pid']}, state in {settings.state_dir})")
    print(f"model:     {settings.model or state.get('model') or '(the server default)'}")
    print(f"key:       {_key_line(settings)}")
    import httpx

    key = settings.api_key
    headers = {"api-key": key, "Authorization": f"Bearer {key}"} if key else {}
    try:
        r = httpx.get(
            endpoint.rstrip("/") + "/info",
            params={"api-version": "2024-05-01-preview"},
            headers=headers,
            timeout=PROBE_TIMEOUT,
        )
    except httpx.HTTPError as exc:
        print(f"answers:   no ({type(exc).__name__}: {exc})")
        return 1
    print(f"answers:   HTTP {r.status_code}")
    if r.status_code == 200:
        for k, v in r.json().items():
            print(f"  {k}: {v}")
    else:
        print(f"  {r.text[:300]}")
    return 0 if r.status_code == 200 else 1


def _remote(settings: Settings) -> int:
    """azure and openai: connect() (Foundry Local's port, the model, a keyless token), then
    GET {base}/models, which every OpenAI-compatible server and Foundry's v1 API answer."""
    from .clients import connect, list_models

    if settings.openai_base_url:
        print(f"endpoint:  {settings.openai_base_url}")
    try:
        connected = connect(settings)
    except ConfigError as exc:
        print(f"model:     {settings.model or '(asked from the server)'}")
        print(f"key:       {_key_line(settings)}")
        print(f"problem:\n{exc}")
        return 1
    if not settings.openai_base_url:
        print(f"endpoint:  {connected.openai_base_url}")
    found = "" if settings.model else "   (the one model the server lists)"
    print(f"model:     {connected.model}{found}")
    print(f"key:       {_key_line(connected)}")
    try:
        ids = list_models(connected, timeout=PROBE_TIMEOUT)
    except ConfigError as exc:
        print(f"answers:   no\n{exc}")
        return 1
    print("answers:   HTTP 200 (GET /models)")
    for model_id in ids[:20]:
        print(f"  {model_id}")
    if len(ids) > 20:
        print(f"  … and {len(ids) - 20} more")
    return 0
