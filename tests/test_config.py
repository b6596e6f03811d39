"""phihelpers.config: every backend's settings, the errors that say what to set, .env, masking."""

from __future__ import annotations

from pathlib import Path

import pytest

from phihelpers.config import (
    DEFAULT_AZURE_MODEL,
    DEFAULT_LOCAL_PORT,
    DEFAULT_N_CTX,
    NO_KEY,
    BackendRetiredError,
    ConfigError,
    load_settings,
)

SECRET = "sk-test-0123456789-very-secret"


# -- local -------------------------------------------------------------------------------
def test_local_is_the_default_backend():
    s = load_settings(env={})
    assert s.backend == "local"
    assert s.endpoint == ""  # filled in by connect() once the server runs
    assert s.model is None
    assert s.local_host == "127.0.0.1"
    assert s.local_port == DEFAULT_LOCAL_PORT and not s.local_port_explicit
    assert s.local_n_ctx == DEFAULT_N_CTX
    assert s.local_threads is None and s.local_model_path is None
    assert not s.key_is_set
    assert s.credential_key == NO_KEY  # AzureKeyCredential refuses an empty key


def test_local_settings_from_the_environment(tmp_path):
    s = load_settings(
        env={
            "PHI_BACKEND": " Local ",
            "PHI_MODEL": "Phi-3-small-8k-instruct",
            "PHI_LOCAL_HOST": "0.0.0.0",
            "PHI_LOCAL_PORT": "9001",
            "PHI_LOCAL_MODEL_PATH": "/models/phi-4-mini.Q4_K_M.gguf",
            "PHI_LOCAL_API_KEY": SECRET,
            "PHI_LOCAL_N_CTX": "2048",
            "PHI_LOCAL_THREADS": "3",
            "PHI_STATE_DIR": str(tmp_path),
        }
    )
    assert s.backend == "local"
    assert s.model == "Phi-3-small-8k-instruct"
    assert (s.local_host, s.local_port, s.local_port_explicit) == ("0.0.0.0", 9001, True)
    assert s.local_model_path == "/models/phi-4-mini.Q4_K_M.gguf"
    assert (s.local_n_ctx, s.local_threads) == (2048, 3)
    assert s.state_dir == tmp_path
    assert s.key_is_set and s.credential_key == SECRET


def test_with_endpoint_fills_in_the_local_server():
    s = load_settings(env={}).with_endpoint("http://127.0.0.1:5000/", model="SmolLM2")
    assert s.openai_base_url == "http://127.0.0.1:5000/v1"
    assert s.model == "SmolLM2"
    # A model the user asked for wins over the server's default.
    s = load_settings(env={"PHI_MODEL": "mine"}).with_endpoint("http://x:1", model="SmolLM2")
    assert s.model == "mine"


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("PHI_LOCAL_PORT", "eighty", "not a whole number"),
        ("PHI_LOCAL_PORT", "-1", "must not be negative"),
        ("PHI_LOCAL_PORT", "70000", "not a TCP port"),
        ("PHI_LOCAL_N_CTX", "4k", "not a whole number"),
        ("PHI_LOCAL_THREADS", "two", "not a whole number"),
    ],
)
def test_bad_numbers_name_the_variable(name, value, words):
    with pytest.raises(ConfigError) as err:
        load_settings(env={name: value})
    assert name in str(err.value) and words in str(err.value)


def test_port_zero_means_any_free_port():
    s = load_settings(env={"PHI_LOCAL_PORT": "0"})
    assert s.local_port == 0 and s.local_port_explicit


def test_unknown_backend_lists_the_choices():
    with pytest.raises(ConfigError) as err:
        load_settings(env={"PHI_BACKEND": "ollama"})
    message = str(err.value)
    assert "PHI_BACKEND='ollama'" in message
    for choice in ("local", "azure", "openai", "github"):
        assert choice in message


# -- azure -------------------------------------------------------------------------------
def test_azure_settings():
    s = load_settings(
        env={
            "PHI_BACKEND": "azure",
            "AZURE_AI_ENDPOINT": "https://res.services.ai.azure.com/models/",
            "AZURE_AI_API_KEY": SECRET,
        }
    )
    assert s.backend == "azure"
    assert s.endpoint == "https://res.services.ai.azure.com/models"
    assert s.model == DEFAULT_AZURE_MODEL
    assert s.credential_key == SECRET and s.key_is_set
    assert s.openai_base_url == "https://res.services.ai.azure.com/openai/v1"


def test_azure_model_name_from_phi_model():
    s = load_settings(
        env={
            "PHI_BACKEND": "azure",
            "AZURE_AI_ENDPOINT": "https://res.services.ai.azure.com/models",
            "AZURE_AI_API_KEY": SECRET,
            "PHI_MODEL": "my-phi-deployment",
        }
    )
    assert s.model == "my-phi-deployment"


@pytest.mark.parametrize(
    ("env", "missing"),
    [
        ({}, ["AZURE_AI_ENDPOINT", "AZURE_AI_API_KEY"]),
        ({"AZURE_AI_API_KEY": SECRET}, ["AZURE_AI_ENDPOINT"]),
        ({"AZURE_AI_ENDPOINT": "https://res.services.ai.azure.com/models"}, ["AZURE_AI_API_KEY"]),
    ],
)
def test_azure_missing_variables_are_named(env, missing):
    with pytest.raises(ConfigError) as err:
        load_settings(env={"PHI_BACKEND": "azure", **env})
    message = str(err.value)
    for name in missing:
        assert name in message
    assert "Azure AI Foundry" in message  # and where to find them
    assert SECRET not in message


@pytest.mark.parametrize(
    "endpoint", ["https://models.inference.ai.azure.com", "https://models.github.ai/inference"]
)
def test_azure_pointed_at_github_models_explains_the_retirement(endpoint):
    with pytest.raises(BackendRetiredError) as err:
        load_settings(
            env={"PHI_BACKEND": "azure", "AZURE_AI_ENDPOINT": endpoint, "AZURE_AI_API_KEY": "x"}
        )
    assert "retired" in str(err.value)


# -- openai ------------------------------------------------------------------------------
def test_openai_settings():
    s = load_settings(
        env={
            "PHI_BACKEND": "openai",
            "OPENAI_BASE_URL": "http://localhost:11434/v1/",
            "PHI_MODEL": "phi4-mini",
        }
    )
    assert s.backend == "openai"
    assert s.endpoint == s.openai_base_url == "http://localhost:11434/v1"
    assert s.model == "phi4-mini"
    assert not s.key_is_set and s.credential_key == NO_KEY  # the key is optional
    s = load_settings(
        env={
            "PHI_BACKEND": "openai",
            "OPENAI_BASE_URL": "http://localhost:8000/v1",
            "PHI_MODEL": "phi4-mini",
            "OPENAI_API_KEY": SECRET,
        }
    )
    assert s.credential_key == SECRET


def test_openai_without_base_url_names_it():
    with pytest.raises(ConfigError) as err:
        load_settings(env={"PHI_BACKEND": "openai", "PHI_MODEL": "phi4-mini"})
    assert "OPENAI_BASE_URL" in str(err.value)


def test_openai_without_model_names_phi_model():
    with pytest.raises(ConfigError) as err:
        load_settings(env={"PHI_BACKEND": "openai", "OPENAI_BASE_URL": "http://localhost:8000/v1"})
    assert "PHI_MODEL" in str(err.value)


# -- github (retired) --------------------------------------------------------------------
@pytest.mark.parametrize("value", ["github", "GitHub"])
def test_github_backend_is_retired_and_says_what_to_do(value):
    with pytest.raises(BackendRetiredError) as err:
        load_settings(env={"PHI_BACKEND": value, "GITHUB_TOKEN": SECRET})
    message = str(err.value)
    assert isinstance(err.value, ConfigError)  # callers that catch ConfigError catch this too
    assert "retired" in message and "410" in message
    for name in ("PHI_BACKEND=local", "AZURE_AI_ENDPOINT", "OPENAI_BASE_URL"):
        assert name in message
    assert SECRET not in message


# -- keys are never shown ----------------------------------------------------------------
@pytest.mark.parametrize(
    "env",
    [
        {"PHI_LOCAL_API_KEY": SECRET},
        {
            "PHI_BACKEND": "azure",
            "AZURE_AI_ENDPOINT": "https://res.services.ai.azure.com/models",
            "AZURE_AI_API_KEY": SECRET,
        },
        {
            "PHI_BACKEND": "openai",
            "OPENAI_BASE_URL": "http://localhost:8000/v1",
            "PHI_MODEL": "m",
            "OPENAI_API_KEY": SECRET,
        },
    ],
)
def test_repr_and_str_never_contain_the_key(env):
    s = load_settings(env=env)
    for text in (repr(s), str(s), f"{s}", repr([s])):
        assert SECRET not in text
        assert "key=set" in text


def test_repr_says_when_no_key_is_set():
    assert "key=not set" in repr(load_settings(env={}))


# -- .env file and precedence --------------------------------------------------------------
@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No PHI_/backend variables in os.environ, and the working directory in an empty tmp dir."""
    for name in (
        "PHI_BACKEND",
        "PHI_MODEL",
        "PHI_LOCAL_PORT",
        "PHI_LOCAL_API_KEY",
        "PHI_STATE_DIR",
        "AZURE_AI_ENDPOINT",
        "AZURE_AI_API_KEY",
        "OPENAI_BASE_URL",
        "OPENAI_API_KEY",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_dotenv_file_is_read(clean_env):
    (clean_env / ".env").write_text(
        "PHI_BACKEND=azure\n"
        "AZURE_AI_ENDPOINT=https://res.services.ai.azure.com/models\n"
        f"AZURE_AI_API_KEY={SECRET}\n"
        "PHI_MODEL=Phi-4-mini-instruct\n"
    )
    s = load_settings()
    assert s.backend == "azure"
    assert s.endpoint == "https://res.services.ai.azure.com/models"
    assert s.credential_key == SECRET


def test_dotenv_is_found_from_a_subdirectory(clean_env, monkeypatch):
    """A notebook runs in notebooks/; the .env sits at the project root."""
    (clean_env / ".env").write_text("PHI_LOCAL_PORT=9123\n")
    sub = clean_env / "notebooks"
    sub.mkdir()
    monkeypatch.chdir(sub)
    assert load_settings().local_port == 9123


def test_environment_wins_over_dotenv(clean_env, monkeypatch):
    (clean_env / ".env").write_text(
        "PHI_BACKEND=github\nPHI_LOCAL_PORT=9123\nPHI_MODEL=from-file\n"
    )
    monkeypatch.setenv("PHI_BACKEND", "local")
    monkeypatch.setenv("PHI_MODEL", "from-env")
    s = load_settings()
    assert s.backend == "local"  # not the retired backend the file names
    assert s.model == "from-env"
    assert s.local_port == 9123  # what the environment does not set still comes from the file


def test_dotenv_can_be_switched_off(clean_env):
    (clean_env / ".env").write_text("PHI_MODEL=from-file\n")
    assert load_settings(dotenv=False).model is None
    assert load_settings().model == "from-file"


def test_explicit_env_mapping_ignores_os_environ_and_dotenv(clean_env, monkeypatch):
    (clean_env / ".env").write_text("PHI_MODEL=from-file\n")
    monkeypatch.setenv("PHI_MODEL", "from-env")
    assert load_settings(env={}).model is None


def test_default_state_dir_follows_xdg_cache_home(clean_env, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(clean_env / "cache"))
    assert load_settings().state_dir == Path(clean_env / "cache" / "phihelpers")
