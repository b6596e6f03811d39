"""Shared test set-up: one real local model server for the whole session.

At the repository root, so it applies to `pytest notebooks/01_basic_chat.ipynb` as much as
to `pytest tests/`.

The environment is set before any test or notebook kernel starts, so nbval's kernels
(which inherit it) and the tests all find the same server through the same state file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
_STATE_DIR = Path(tempfile.mkdtemp(prefix="phihelpers-test-state-"))


# The escape hatch: PHI_TEST_BACKEND=inherit keeps these from the environment, so a run can
# point the notebooks at another backend on purpose. tests/test_foreign_backend.py runs
#   PHI_TEST_BACKEND=inherit PHI_BACKEND=openai OPENAI_BASE_URL=http://127.0.0.1:P/v1 \
#   python -m pytest notebooks/
# against llama-cpp-python's own server. Everything else stays hermetic (state dir, port).
BACKEND_VARIABLES = (
    "PHI_BACKEND", "PHI_MODEL", "OPENAI_BASE_URL", "OPENAI_API_KEY",
    "AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_API_KEY", "AZURE_OPENAI_BASE_URL",
    "AZURE_AI_ENDPOINT", "AZURE_AI_API_KEY",
)  # fmt: skip
_INHERIT = os.environ.get("PHI_TEST_BACKEND", "").strip().lower() == "inherit"


def _hermetic_env() -> None:
    """Tests and notebooks use the embedded local model, whatever the developer's shell says
    (unless PHI_TEST_BACKEND=inherit: then BACKEND_VARIABLES are kept as they are)."""
    kept = {n: os.environ[n] for n in BACKEND_VARIABLES if _INHERIT and n in os.environ}
    for name in list(os.environ):
        if name.startswith("PHI_") or name in BACKEND_VARIABLES:
            os.environ.pop(name)
    os.environ["PHI_BACKEND"] = "local"  # wins over a developer's .env
    os.environ.update(kept)
    os.environ["PHI_STATE_DIR"] = str(_STATE_DIR)
    os.environ["PHI_LOCAL_PORT"] = "0"  # any free port: never collide with a learner's server
    # Models a developer pulled (a real Phi, gigabytes) are not the suite's business.
    os.environ["PHI_MODELS_DIR"] = str(_STATE_DIR / "models")


def pytest_configure(config):
    if not hasattr(config, "workerinput"):  # the xdist controller (or a plain run)
        _hermetic_env()


def pytest_unconfigure(config):
    if not hasattr(config, "workerinput"):
        from phihelpers.local import stop_local_server

        stop_local_server()


@pytest.fixture(scope="session")
def settings():
    """Settings connected to the session's local server (started on first use)."""
    from phihelpers import connect

    return connect()


@pytest.fixture(scope="session")
def endpoint(settings) -> str:
    return settings.endpoint


@pytest.fixture(scope="module")
def oai(settings):
    """An openai.OpenAI client on the session's server (the OpenAI-compatible routes)."""
    from openai import OpenAI

    with OpenAI(base_url=settings.openai_base_url, api_key=settings.credential_key) as c:
        yield c
