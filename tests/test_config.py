"""phihelpers.config: every backend's settings, the errors that say what to set, .env, masking."""

from __future__ import annotations

from pathlib import Path

import pytest

from phihelpers.config import (
    DEFAULT_AZURE_MODEL,
    DEFAULT_LOCAL_PORT,
    DEFAULT_N_CTX,
    NO_KEY,
    RECIPES,
    BackendRetiredError,
    ConfigError,
    load_settings,
    retired_endpoint_message,
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
        load_settings(env={"PHI_BACKEND": "lmstudio"})
    message = str(err.value)
    assert "PHI_BACKEND='lmstudio'" in message
    for choice in ("local", "azure", "openai", "github", *RECIPES):
        assert choice in message


# -- azure: Microsoft Foundry's OpenAI v1 API --------------------------------------------------
V1 = "https://res.openai.azure.com/openai/v1"


@pytest.mark.parametrize(
    "given",
    [
        "https://res.openai.azure.com/openai/v1/",  # what the portal shows
        "https://res.openai.azure.com/openai/v1",
        "https://res.openai.azure.com",  # the resource root
        "https://res.openai.azure.com/",
        "https://res.openai.azure.com/openai",
        "https://res.openai.azure.com/openai/v1/?api-version=preview",  # v1 takes none
    ],
)
def test_azure_v1_endpoint_with_a_key(given):
    s = load_settings(
        env={"PHI_BACKEND": "azure", "AZURE_OPENAI_ENDPOINT": given, "AZURE_OPENAI_API_KEY": SECRET}
    )
    assert s.backend == "azure" and s.recipe is None
    assert s.endpoint == s.openai_base_url == V1
    assert s.model == DEFAULT_AZURE_MODEL
    assert s.auth == "key" and s.key_is_set and not s.keyless
    assert s.credential_key == SECRET


def test_azure_resource_root_on_the_services_domain_gets_openai_v1():
    s = load_settings(
        env={
            "PHI_BACKEND": "azure",
            "AZURE_OPENAI_ENDPOINT": "https://res.services.ai.azure.com/",
            "AZURE_OPENAI_API_KEY": SECRET,
        }
    )
    assert s.openai_base_url == "https://res.services.ai.azure.com/openai/v1"


def test_azure_endpoint_with_another_path_is_taken_as_given():
    """A gateway, or a local stand-in such as the project's own server under /v1."""
    s = load_settings(
        env={"PHI_BACKEND": "azure", "AZURE_OPENAI_ENDPOINT": "http://127.0.0.1:8765/v1/"}
    )
    assert s.openai_base_url == s.endpoint == "http://127.0.0.1:8765/v1"


def test_azure_model_is_the_deployment_name():
    s = load_settings(
        env={
            "PHI_BACKEND": "azure",
            "AZURE_OPENAI_ENDPOINT": V1,
            "AZURE_OPENAI_API_KEY": SECRET,
            "PHI_MODEL": "my-phi-deployment",
        }
    )
    assert s.model == "my-phi-deployment"


def test_azure_older_variable_names_are_still_read_and_the_new_ones_win():
    old = load_settings(
        env={
            "PHI_BACKEND": "azure",
            "AZURE_AI_ENDPOINT": "https://res.openai.azure.com",
            "AZURE_AI_API_KEY": SECRET,
        }
    )
    assert old.openai_base_url == V1 and old.credential_key == SECRET
    both = load_settings(
        env={
            "PHI_BACKEND": "azure",
            "AZURE_AI_ENDPOINT": "https://res.services.ai.azure.com/models",  # retired, ignored
            "AZURE_AI_API_KEY": "old-key",
            "AZURE_OPENAI_ENDPOINT": "https://new.openai.azure.com/openai/v1/",
            "AZURE_OPENAI_API_KEY": SECRET,
        }
    )
    assert both.openai_base_url == "https://new.openai.azure.com/openai/v1"
    assert both.credential_key == SECRET


class FakeCredential:
    """Stands in for an azure-identity credential: only get_token, never called here."""

    def get_token(self, *scopes, **kwargs):  # pragma: no cover - load_settings must not call it
        raise AssertionError("load_settings() must not fetch a token")


def test_azure_without_a_key_is_keyless_and_load_settings_fetches_nothing():
    fake = FakeCredential()
    s = load_settings(env={"PHI_BACKEND": "azure", "AZURE_OPENAI_ENDPOINT": V1}, credential=fake)
    assert s.auth == "entra" and s.keyless and not s.key_is_set
    assert s.credential is fake and s.token_provider is None
    assert "keyless" in repr(s)
    with pytest.raises(ConfigError) as err:  # the token comes from connect(), not from here
        _ = s.credential_key
    assert "connect()" in str(err.value)


def test_an_injected_credential_is_ignored_when_a_key_is_set():
    s = load_settings(
        env={"PHI_BACKEND": "azure", "AZURE_OPENAI_ENDPOINT": V1, "AZURE_OPENAI_API_KEY": SECRET},
        credential=FakeCredential(),
    )
    assert s.credential is None and s.key_is_set


def test_azure_without_an_endpoint_says_what_to_set():
    with pytest.raises(ConfigError) as err:
        load_settings(env={"PHI_BACKEND": "azure", "AZURE_OPENAI_API_KEY": SECRET})
    message = str(err.value)
    for words in (
        "AZURE_OPENAI_ENDPOINT",
        "https://<resource>.openai.azure.com/openai/v1/",
        "AZURE_OPENAI_API_KEY",
        "Microsoft Foundry",
        "Entra ID",
    ):
        assert words in message
    assert SECRET not in message


@pytest.mark.parametrize(
    ("given", "words"),
    [
        ("res.openai.azure.com", "not an http(s) URL"),
        (
            "https://res.openai.azure.com/openai/deployments/phi/chat/completions?api-version=x",
            "AZURE_OPENAI_ENDPOINT=https://res.openai.azure.com/openai/v1/",
        ),
        (
            "https://res.services.ai.azure.com/api/projects/proj",
            "AZURE_OPENAI_ENDPOINT=https://res.openai.azure.com/openai/v1/",
        ),
    ],
)
def test_azure_endpoint_of_a_wrong_shape_says_the_right_one(given, words):
    with pytest.raises(ConfigError) as err:
        load_settings(env={"PHI_BACKEND": "azure", "AZURE_OPENAI_ENDPOINT": given})
    assert words in str(err.value)
    assert not isinstance(err.value, BackendRetiredError)


# -- retired endpoint shapes: one paragraph, what and when, and the values to use instead ----
RETIRED = [
    ("azure", "AZURE_AI_ENDPOINT", "https://res.services.ai.azure.com/models"),
    ("azure", "AZURE_OPENAI_ENDPOINT", "https://res.services.ai.azure.com/models/"),
    ("azure", "AZURE_AI_ENDPOINT", "https://models.inference.ai.azure.com"),
    ("azure", "AZURE_OPENAI_ENDPOINT", "https://models.github.ai/inference"),
    ("openai", "OPENAI_BASE_URL", "https://models.inference.ai.azure.com"),
    ("openai", "OPENAI_BASE_URL", "https://models.github.ai/inference/"),
    ("openai", "OPENAI_BASE_URL", "https://res.services.ai.azure.com/models"),
    ("ollama", "OPENAI_BASE_URL", "https://models.github.ai/inference"),
]


def _one_paragraph(message: str) -> None:
    assert "\n" not in message.strip()
    for fact in ("2026-07-30", "410", "October 2025", "2026-08-26", "azure-ai-inference"):
        assert fact in message, fact
    assert "Use instead" in message or "set PHI_BACKEND=azure" in message


@pytest.mark.parametrize(("backend", "name", "url"), RETIRED)
def test_retired_endpoints_are_answered_with_one_paragraph(backend, name, url):
    with pytest.raises(BackendRetiredError) as err:
        load_settings(env={"PHI_BACKEND": backend, name: url, "AZURE_AI_API_KEY": SECRET})
    message = str(err.value)
    assert isinstance(err.value, ConfigError)
    assert f"{name}={url}" in message  # what the user set
    _one_paragraph(message)
    assert "PHI_BACKEND=azure" in message and "AZURE_OPENAI_ENDPOINT=https://" in message
    assert SECRET not in message


def test_a_retired_foundry_endpoint_gets_its_own_resources_v1_url():
    with pytest.raises(BackendRetiredError) as err:
        load_settings(
            env={
                "PHI_BACKEND": "azure",
                "AZURE_AI_ENDPOINT": "https://contoso-ai.services.ai.azure.com/models",
            }
        )
    message = str(err.value)
    assert "Azure AI Model Inference API" in message
    assert "AZURE_OPENAI_ENDPOINT=https://contoso-ai.openai.azure.com/openai/v1/" in message


@pytest.mark.parametrize(
    "url", ["https://res.openai.azure.com/openai/v1", "https://res.services.ai.azure.com"]
)
def test_current_foundry_urls_are_not_called_retired(url):
    assert retired_endpoint_message("AZURE_OPENAI_ENDPOINT", url) is None


# -- openai ------------------------------------------------------------------------------
def test_openai_settings():
    s = load_settings(
        env={
            "PHI_BACKEND": "openai",
            "OPENAI_BASE_URL": "http://localhost:11434/v1/",
            "PHI_MODEL": "phi4-mini",
        }
    )
    assert s.backend == "openai" and s.recipe is None
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
    assert s.credential_key == SECRET and s.key_is_set


def test_openai_without_base_url_names_it_and_the_recipes():
    with pytest.raises(ConfigError) as err:
        load_settings(env={"PHI_BACKEND": "openai", "PHI_MODEL": "phi4-mini"})
    message = str(err.value)
    assert "OPENAI_BASE_URL" in message
    for name in RECIPES:
        assert name in message


def test_openai_model_is_optional_connect_asks_the_server():
    s = load_settings(env={"PHI_BACKEND": "openai", "OPENAI_BASE_URL": "http://localhost:8000/v1"})
    assert s.model is None  # connect() fills it in from GET /models (tests/test_clients.py)


def test_openai_base_url_must_be_a_url():
    with pytest.raises(ConfigError) as err:
        load_settings(env={"PHI_BACKEND": "openai", "OPENAI_BASE_URL": "localhost:11434"})
    assert "OPENAI_BASE_URL" in str(err.value) and "not an http(s) URL" in str(err.value)


# -- github (retired) --------------------------------------------------------------------
@pytest.mark.parametrize("value", ["github", "GitHub"])
def test_github_backend_is_retired_and_says_what_to_do(value):
    with pytest.raises(BackendRetiredError) as err:
        load_settings(env={"PHI_BACKEND": value, "GITHUB_TOKEN": SECRET})
    message = str(err.value)
    assert isinstance(err.value, ConfigError)  # callers that catch ConfigError catch this too
    assert "retired" in message
    _one_paragraph(message)
    for name in ("PHI_BACKEND=local", "AZURE_OPENAI_ENDPOINT=", "OPENAI_BASE_URL="):
        assert name in message
    assert SECRET not in message


# -- keys are never shown ----------------------------------------------------------------
@pytest.mark.parametrize(
    "env",
    [
        {"PHI_LOCAL_API_KEY": SECRET},
        {
            "PHI_BACKEND": "azure",
            "AZURE_OPENAI_ENDPOINT": "https://res.openai.azure.com/openai/v1/",
            "AZURE_OPENAI_API_KEY": SECRET,
        },
        {"PHI_BACKEND": "ollama", "OPENAI_API_KEY": SECRET},
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
        "AZURE_OPENAI_ENDPOINT",
        "AZURE_OPENAI_API_KEY",
        "AZURE_OPENAI_BASE_URL",
        "OPENAI_BASE_URL",
        "OPENAI_API_KEY",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_dotenv_file_is_read(clean_env):
    (clean_env / ".env").write_text(
        "PHI_BACKEND=azure\n"
        "AZURE_OPENAI_ENDPOINT=https://res.openai.azure.com/openai/v1/\n"
        f"AZURE_OPENAI_API_KEY={SECRET}\n"
        "PHI_MODEL=Phi-4-mini-instruct\n"
    )
    s = load_settings()
    assert s.backend == "azure"
    assert s.endpoint == "https://res.openai.azure.com/openai/v1"
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
