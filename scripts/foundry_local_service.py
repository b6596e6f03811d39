"""Foundry Local for the lessons: Microsoft's local runtime serving Phi-4-mini on a fixed address.

Foundry Local runs on Linux as a library (foundry-local-sdk: the native runtime inside the wheel,
ONNX Runtime GenAI underneath), not as the `foundry` CLI and service of Windows and macOS. This
script is the service: it loads the model in-process and starts the SDK's built-in web service,
which speaks the OpenAI-compatible API the lessons use (PHI_BACKEND=foundry-local with
OPENAI_BASE_URL=<FOUNDRY_LOCAL_URL>/v1). Used by .devcontainer/phi-4-mini-foundry-local through
scripts/foundry-local.sh, with the Python of the venv that script makes (the SDK stays out of the
lessons' pinned .venv).

    python foundry_local_service.py download   fetch the model into the cache, once
    python foundry_local_service.py serve      load it, serve until SIGTERM or Ctrl-C

Environment: FOUNDRY_LOCAL_MODEL (catalog alias, default phi-4-mini: the SDK picks the variant
for this hardware, the CPU one in a codespace), FOUNDRY_LOCAL_URL (default
http://127.0.0.1:5273), FOUNDRY_LOCAL_CACHE (default ~/.cache/foundry-local/models).
"""

from __future__ import annotations

import os
import signal
import sys
import threading

APP_NAME = "phi-quick-start"
MODEL = os.environ.get("FOUNDRY_LOCAL_MODEL") or "phi-4-mini"
URL = (os.environ.get("FOUNDRY_LOCAL_URL") or "http://127.0.0.1:5273").rstrip("/")
CACHE = os.environ.get("FOUNDRY_LOCAL_CACHE") or os.path.expanduser("~/.cache/foundry-local/models")


def _manager(web: bool):
    from foundry_local_sdk import Configuration, FoundryLocalManager

    config = Configuration(
        app_name=APP_NAME,
        model_cache_dir=CACHE,
        web=Configuration.WebService(urls=URL) if web else None,
    )
    FoundryLocalManager.initialize(config)
    return FoundryLocalManager.instance


def _model(manager):
    try:
        model = manager.catalog.get_model(MODEL)
    except Exception as exc:  # the catalog is fetched from the network
        sys.exit(f"Foundry Local could not read its model catalog ({exc}). It needs a network.")
    if model is None:
        sys.exit(
            f"Foundry Local's catalog lists no model {MODEL!r} (FOUNDRY_LOCAL_MODEL). The catalog "
            "is fetched from the network: if the lines above say it could not be, check that."
        )
    return model


def _progress():
    shown = [-100.0]

    def report(percent: float) -> None:
        if percent - shown[0] >= 5 or percent >= 100:
            shown[0] = percent
            print(f"  {MODEL}: {percent:5.1f} %", flush=True)

    return report


def download() -> int:
    model = _model(_manager(web=False))
    if model.is_cached:
        print(f"{model.id} is already in {CACHE}")
        return 0
    print(f"Downloading {model.id} into {CACHE} (once)", flush=True)
    model.download(_progress())
    print(f"{model.id} is in {CACHE}")
    return 0


def serve() -> int:
    manager = _manager(web=True)
    model = _model(manager)
    if not model.is_cached:
        model.download(_progress())
    model.load()
    manager.start_web_service()
    print(
        f"Foundry Local serves {model.id} on {', '.join(manager.urls)} (API: {URL}/v1)", flush=True
    )
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    manager.stop_web_service()
    model.unload()
    print("Foundry Local stopped", flush=True)
    return 0


def main(argv: list[str]) -> int:
    commands = {"download": download, "serve": serve}
    if len(argv) != 1 or argv[0] not in commands:
        print(f"usage: {os.path.basename(__file__)} download | serve", file=sys.stderr)
        return 2
    return commands[argv[0]]()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
