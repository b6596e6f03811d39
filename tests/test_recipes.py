"""Named recipes: PHI_BACKEND=ollama | foundry-local | vllm | llama-server.

Each resolves to the openai backend with its server's defaults; OPENAI_BASE_URL, PHI_MODEL and
OPENAI_API_KEY override them. Foundry Local's dynamic port is read from a real `foundry`
executable on PATH (a small script standing in for the CLI) and the model from a real HTTP
server's GET /v1/models.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from openai_stub import OpenAIStub

from phihelpers import connect
from phihelpers.config import NO_KEY, RECIPES, BackendUnreachableError, ConfigError, load_settings
from phihelpers.recipes import parse_foundry_status

SECRET = "not-a-real-key-recipe-5e1f0c2b9a"


@pytest.mark.parametrize(
    ("backend", "base", "model"),
    [
        ("ollama", "http://localhost:11434/v1", "phi4-mini"),
        ("vllm", "http://localhost:8000/v1", None),  # None: the one model the server lists
        ("llama-server", "http://localhost:8080/v1", None),
        ("foundry-local", "", None),  # "": the port is found by connect()
    ],
)
def test_each_recipe_resolves_to_the_openai_backend_with_its_defaults(backend, base, model):
    s = load_settings(env={"PHI_BACKEND": backend})
    assert s.backend == "openai"
    assert s.recipe == backend
    assert s.openai_base_url == s.endpoint == base
    assert s.model == model
    assert not s.key_is_set and s.credential_key == NO_KEY  # any key does: a placeholder
    assert f"recipe='{backend}'" in repr(s)


def test_the_recipes_are_the_four_named_servers():
    assert set(RECIPES) == {"ollama", "foundry-local", "vllm", "llama-server"}


@pytest.mark.parametrize("spelling", ["Ollama", " OLLAMA ", "ollama"])
def test_recipe_names_ignore_case_and_spaces(spelling):
    assert load_settings(env={"PHI_BACKEND": spelling}).recipe == "ollama"


def test_underscore_spelling_is_accepted():
    assert load_settings(env={"PHI_BACKEND": "foundry_local"}).recipe == "foundry-local"
    assert load_settings(env={"PHI_BACKEND": "llama_server"}).recipe == "llama-server"


def test_explicit_variables_override_a_recipe():
    s = load_settings(
        env={
            "PHI_BACKEND": "ollama",
            "OPENAI_BASE_URL": "http://gpu-box:11434/v1/",
            "PHI_MODEL": "phi4",
            "OPENAI_API_KEY": SECRET,
        }
    )
    assert (s.backend, s.recipe) == ("openai", "ollama")
    assert s.openai_base_url == "http://gpu-box:11434/v1"
    assert s.model == "phi4"
    assert s.key_is_set and s.credential_key == SECRET
    assert SECRET not in repr(s)


def test_plain_openai_has_no_recipe():
    s = load_settings(env={"PHI_BACKEND": "openai", "OPENAI_BASE_URL": "http://x:1/v1"})
    assert s.recipe is None and "recipe=" not in repr(s)


def test_the_local_and_azure_backends_have_no_recipe():
    assert load_settings(env={}).recipe is None
    azure = load_settings(
        env={"PHI_BACKEND": "azure", "AZURE_OPENAI_ENDPOINT": "https://r.openai.azure.com"}
    )
    assert azure.recipe is None


def test_a_recipe_without_a_fixed_model_asks_the_server():
    """vLLM and llama-server serve one model: connect() takes the one GET /v1/models lists."""
    with OpenAIStub(models=["microsoft/Phi-4-mini-instruct"]) as stub:
        s = connect(load_settings(env={"PHI_BACKEND": "vllm", "OPENAI_BASE_URL": stub.url + "/v1"}))
    assert s.recipe == "vllm"
    assert s.model == "microsoft/Phi-4-mini-instruct"
    assert [r.path for r in stub.seen] == ["/v1/models"]


def test_ollama_with_its_model_asks_nothing():
    with OpenAIStub() as stub:
        s = load_settings(env={"PHI_BACKEND": "ollama", "OPENAI_BASE_URL": stub.url + "/v1"})
        assert connect(s) is s  # phi4-mini is the recipe's model: no question needed
    assert stub.seen == []


# -- Foundry Local: the port from `foundry service status` -------------------------------------
STATUS_SAMPLES = [
    (
        "🟢 Model management service is running on http://127.0.0.1:51995/openai/status\n",
        "http://127.0.0.1:51995/v1",
    ),
    (
        "Model management service is running on http://localhost:5273/openai/status",
        "http://localhost:5273/v1",
    ),
    ("Service is running at http://127.0.0.1:60123.", "http://127.0.0.1:60123/v1"),
    ("🔴 Model management service is not running!", None),
    ("", None),
]


@pytest.mark.parametrize(("text", "base"), STATUS_SAMPLES)
def test_parse_foundry_status(text, base):
    assert parse_foundry_status(text) == base


def fake_foundry(bindir: Path, output: str, marker: Path | None = None) -> Path:
    """An executable `foundry` that prints `output` for `foundry service status`."""
    bindir.mkdir(parents=True, exist_ok=True)
    script = bindir / "foundry"
    touch = f'touch "{marker}"\n' if marker else ""
    script.write_text(
        "#!/bin/sh\n"
        f"{touch}"
        'if [ "$1 $2" = "service status" ]; then\n'
        f"  cat <<'EOF'\n{output}\nEOF\n"
        "  exit 0\n"
        "fi\n"
        "exit 2\n",
        encoding="utf-8",
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return script


def test_foundry_local_port_comes_from_the_cli_and_the_model_from_the_server(tmp_path, monkeypatch):
    with OpenAIStub(models=["Phi-4-mini-instruct-generic-cpu"]) as stub:
        fake_foundry(
            tmp_path / "bin",
            f"🟢 Model management service is running on {stub.url}/openai/status",
        )
        monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
        s = connect(load_settings(env={"PHI_BACKEND": "foundry-local"}))
    assert s.recipe == "foundry-local" and s.backend == "openai"
    assert s.openai_base_url == s.endpoint == stub.url + "/v1"
    assert s.model == "Phi-4-mini-instruct-generic-cpu"
    assert [r.path for r in stub.seen] == ["/v1/models"]


def test_foundry_local_with_openai_base_url_does_not_run_the_cli(tmp_path, monkeypatch):
    marker = tmp_path / "cli-was-run"
    fake_foundry(tmp_path / "bin", "running on http://127.0.0.1:1/openai/status", marker)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    with OpenAIStub(models=["phi-4-mini"]) as stub:
        s = connect(
            load_settings(env={"PHI_BACKEND": "foundry-local", "OPENAI_BASE_URL": stub.url + "/v1"})
        )
    assert s.openai_base_url == stub.url + "/v1" and s.model == "phi-4-mini"
    assert not marker.exists()


def test_foundry_local_without_the_cli_says_how_to_set_openai_base_url(tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(ConfigError) as err:
        connect(load_settings(env={"PHI_BACKEND": "foundry-local"}))
    message = str(err.value)
    assert "`foundry`" in message and "not on PATH" in message
    assert "OPENAI_BASE_URL=http://127.0.0.1:" in message and "/v1" in message
    assert "foundry service status" in message


def test_foundry_local_when_its_service_is_not_running(tmp_path, monkeypatch):
    fake_foundry(tmp_path / "bin", "🔴 Model management service is not running!")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(BackendUnreachableError) as err:
        connect(load_settings(env={"PHI_BACKEND": "foundry-local"}))
    message = str(err.value)
    assert "foundry service start" in message
    assert "not running" in message  # what the CLI said is quoted
    assert "OPENAI_BASE_URL" in message
