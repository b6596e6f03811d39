"""`python -m phihelpers doctor` on the azure and openai backends and the recipes.

Real servers: a small OpenAI-compatible HTTP server on 127.0.0.1 (tests/openai_stub.py). The
local backend's doctor is covered in tests/test_cli.py. Keys and tokens never appear.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time

import pytest
from azure.core.credentials import AccessToken
from openai_stub import OpenAIStub

from phihelpers.config import GITHUB_RETIRED_MESSAGE
from phihelpers.doctor import doctor

SECRET = "not-a-real-key-doctor-3c2b1a0f9e"


@pytest.fixture
def env(monkeypatch, tmp_path):
    """No backend variables from the developer's shell, and no .env in the working directory."""
    for name in list(os.environ):
        if name.startswith(("PHI_", "AZURE_", "OPENAI_")) or name == "GITHUB_TOKEN":
            monkeypatch.delenv(name)
    monkeypatch.setenv("PHI_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.chdir(tmp_path)

    def set_(**values: str) -> None:
        for k, v in values.items():
            monkeypatch.setenv(k, v)

    return set_


def run(capsys) -> tuple[int, str]:
    code = doctor()
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def line(out: str, name: str) -> str:
    match = re.search(rf"^{name}:\s+(.*)$", out, re.M)
    assert match, f"no {name}: line in\n{out}"
    return match.group(1)


def test_openai_with_only_the_base_url(env, capsys):
    with OpenAIStub(models=["phi4-mini:latest"]) as stub:
        env(PHI_BACKEND="openai", OPENAI_BASE_URL=stub.url + "/v1")
        code, out = run(capsys)
    assert code == 0, out
    assert line(out, "backend") == "openai"
    assert line(out, "endpoint") == stub.url + "/v1"
    assert line(out, "model").startswith("phi4-mini:latest")
    assert "the one model the server lists" in out
    assert line(out, "key") == "not set"
    assert line(out, "answers") == "HTTP 200 (GET /models)"
    assert re.search(r"^  phi4-mini:latest$", out, re.M)


def test_openai_with_several_models_names_them(env, capsys):
    with OpenAIStub(models=["phi4-mini", "phi4"]) as stub:
        env(PHI_BACKEND="openai", OPENAI_BASE_URL=stub.url + "/v1")
        code, out = run(capsys)
    assert code == 1
    assert "problem:" in out and "phi4-mini, phi4" in out and "PHI_MODEL" in out
    assert "Traceback" not in out


def test_openai_with_nothing_listening(env, capsys):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env(PHI_BACKEND="openai", OPENAI_BASE_URL=f"http://127.0.0.1:{port}/v1", PHI_MODEL="m")
    code, out = run(capsys)
    assert code == 1
    assert line(out, "model") == "m"
    assert "answers:   no" in out and "running" in out
    assert "Traceback" not in out


def test_a_recipe_is_named(env, capsys):
    with OpenAIStub(models=["microsoft/Phi-4-mini-instruct"]) as stub:
        env(PHI_BACKEND="vllm", OPENAI_BASE_URL=stub.url + "/v1", OPENAI_API_KEY=SECRET)
        code, out = run(capsys)
    assert code == 0, out
    assert line(out, "backend") == "openai" and line(out, "recipe") == "vllm"
    assert line(out, "key") == "set"
    assert all(r.headers["authorization"] == f"Bearer {SECRET}" for r in stub.seen)
    assert SECRET not in out


def test_azure_with_a_key_at_the_resource_root(env, capsys):
    with OpenAIStub(key=SECRET) as stub:
        env(PHI_BACKEND="azure", AZURE_OPENAI_ENDPOINT=stub.url, AZURE_OPENAI_API_KEY=SECRET)
        code, out = run(capsys)
    assert code == 0, out
    assert line(out, "backend") == "azure"
    assert line(out, "endpoint") == stub.url + "/openai/v1"
    assert line(out, "model") == "Phi-4-mini-instruct"
    assert line(out, "key") == "set"
    (asked,) = stub.seen
    assert asked.path == "/openai/v1/models"
    assert asked.headers["api-key"] == SECRET  # Foundry's key header, and the bearer form
    assert SECRET not in out


class FakeDefaultAzureCredential:
    """Stands in for azure.identity.DefaultAzureCredential (no Azure here)."""

    def __init__(self, **kwargs):
        pass

    def get_token(self, *scopes, **kwargs):
        return AccessToken("fake-doctor-token", int(time.time()) + 3600)


def test_azure_keyless_uses_default_azure_credential_and_never_prints_the_token(
    env, capsys, monkeypatch
):
    import azure.identity

    monkeypatch.setattr(azure.identity, "DefaultAzureCredential", FakeDefaultAzureCredential)
    with OpenAIStub(key="fake-doctor-token") as stub:
        env(PHI_BACKEND="azure", AZURE_OPENAI_ENDPOINT=stub.url + "/openai/v1/")
        code, out = run(capsys)
    assert code == 0, out
    assert line(out, "key").startswith("not set (keyless")
    assert stub.seen[-1].headers["authorization"] == "Bearer fake-doctor-token"
    assert "fake-doctor-token" not in out


def test_foundry_local_without_its_cli(env, capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    env(PHI_BACKEND="foundry-local", PATH=str(tmp_path / "empty"))
    code, out = run(capsys)
    assert code == 1
    assert line(out, "recipe") == "foundry-local"
    assert "not on PATH" in out and "OPENAI_BASE_URL" in out
    assert "Traceback" not in out


# -- retired shapes: the paragraph, from the command a user types ------------------------------
@pytest.mark.parametrize(
    "extra",
    [
        {"PHI_BACKEND": "github", "GITHUB_TOKEN": SECRET},
        {"PHI_BACKEND": "azure", "AZURE_AI_ENDPOINT": "https://res.services.ai.azure.com/models"},
        {"PHI_BACKEND": "openai", "OPENAI_BASE_URL": "https://models.github.ai/inference"},
        {"PHI_BACKEND": "azure", "AZURE_AI_ENDPOINT": "https://models.inference.ai.azure.com"},
    ],
)
def test_doctor_command_answers_a_retired_shape_with_one_paragraph(tmp_path, extra):
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PHI_", "AZURE_", "OPENAI_")) and k != "GITHUB_TOKEN"
    }
    env.update(extra, AZURE_AI_API_KEY=SECRET, PHI_STATE_DIR=str(tmp_path))
    done = subprocess.run(
        [sys.executable, "-m", "phihelpers", "doctor"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = done.stdout + done.stderr
    assert done.returncode != 0
    paragraphs = [p for p in out.strip().split("\n") if p and not p.endswith(":")]
    assert len(paragraphs) == 1, out  # one paragraph, after "configuration problem:"
    (paragraph,) = paragraphs
    for fact in ("2026-07-30", "410", "October 2025", "2026-08-26"):
        assert fact in paragraph
    assert "AZURE_OPENAI_ENDPOINT=https://" in paragraph
    if extra["PHI_BACKEND"] == "github":
        assert paragraph == GITHUB_RETIRED_MESSAGE
    assert "Traceback" not in out and SECRET not in out


def test_azure_settings_pointed_at_the_project_server_as_a_stand_in(endpoint, env, capsys):
    """A URL with a path is taken as given, so the local server under /v1 stands in for Foundry."""
    env(
        PHI_BACKEND="azure",
        AZURE_OPENAI_ENDPOINT=endpoint + "/v1/",
        AZURE_OPENAI_API_KEY=SECRET,  # the session server needs none and ignores it
    )
    code, out = run(capsys)
    assert code == 0, out
    assert line(out, "endpoint") == endpoint + "/v1"
    assert line(out, "answers") == "HTTP 200 (GET /models)"
    assert SECRET not in out
