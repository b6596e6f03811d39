"""phihelpers.clients: connect(), chat_client() and openai_client() against the real local server,
with the real azure-ai-inference and openai clients, streaming and not."""

from __future__ import annotations

import socket
import time

import pytest
from azure.ai.inference import ChatCompletionsClient
from azure.ai.inference.models import SystemMessage, UserMessage
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError
from openai import OpenAI
from openai_stub import OpenAIStub

from phihelpers import chat_client, connect, openai_client
from phihelpers.config import (
    AZURE_TOKEN_SCOPE,
    NO_KEY,
    BackendUnreachableError,
    ConfigError,
    load_settings,
)
from phihelpers.local import running_server

SECRET = "not-a-real-key-clients-8a7b6c5d4e"

QUESTION = "What is the capital of France?"
MAX_TOKENS = 24


def test_connect_finds_the_running_local_server(settings):
    again = connect()
    assert again.backend == "local"
    assert again.endpoint == settings.endpoint
    assert again.endpoint.startswith("http://127.0.0.1:")
    assert again.openai_base_url == again.endpoint + "/v1"
    assert again.model == running_server()["model"]  # the model the server really serves
    assert again.credential_key == NO_KEY  # the session server needs no key


def test_connect_leaves_other_backends_alone():
    s = load_settings(
        env={
            "PHI_BACKEND": "openai",
            "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
            "PHI_MODEL": "phi4-mini",
        }
    )
    assert connect(s) is s  # no server started, nothing probed


def test_chat_client_complete(settings):
    with chat_client() as client:
        assert isinstance(client, ChatCompletionsClient)
        response = client.complete(
            messages=[
                SystemMessage(content="You are a helpful assistant."),
                UserMessage(content=QUESTION),
            ],
            model="Phi-3-small-8k-instruct",  # the seed's name is accepted...
            max_tokens=MAX_TOKENS,
        )
    assert response.model == settings.model  # ...and the answer says who really answered
    choice = response.choices[0]
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str) and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert 0 < response.usage.completion_tokens <= MAX_TOKENS
    assert response.usage.total_tokens == (
        response.usage.prompt_tokens + response.usage.completion_tokens
    )


def test_chat_client_model_info(settings):
    with chat_client() as client:
        info = client.get_model_info()
    assert info.model_name == settings.model
    assert info.model_type == "chat_completion"


def test_chat_client_streaming():
    with chat_client() as client:
        stream = client.complete(
            stream=True,
            messages=[UserMessage(content=QUESTION)],
            max_tokens=MAX_TOKENS,
        )
        text, finish, usage, empty = [], None, None, 0
        for update in stream:
            if not update.choices:  # the final usage chunk (real services: content filter too)
                empty += 1
                usage = update.usage or usage
                continue
            text.append(update.choices[0].delta.content or "")
            finish = update.choices[0].finish_reason or finish
    assert "".join(text)
    assert finish in ("stop", "length")
    assert empty >= 1 and usage is not None and 0 < usage.completion_tokens <= MAX_TOKENS


def test_openai_client_chat_completions(settings):
    client = openai_client()
    assert isinstance(client, OpenAI)
    assert str(client.base_url).rstrip("/") == settings.openai_base_url
    with client:
        response = client.chat.completions.create(
            model="Phi-3-small-8k-instruct",
            messages=[{"role": "user", "content": QUESTION}],
            max_tokens=MAX_TOKENS,
        )
    assert response.model == settings.model
    assert response.choices[0].message.content
    assert response.choices[0].finish_reason in ("stop", "length")
    assert 0 < response.usage.completion_tokens <= MAX_TOKENS


def test_openai_client_streaming(settings):
    with openai_client() as client:
        stream = client.chat.completions.create(
            model=settings.model,
            messages=[{"role": "user", "content": QUESTION}],
            max_tokens=MAX_TOKENS,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert [c.usage for c in chunks if c.usage][-1].completion_tokens > 0


def test_other_backends_through_the_same_factories(endpoint, settings):
    """PHI_BACKEND=openai and =azure, pointed at the local server: only settings change."""
    as_openai = load_settings(
        env={"PHI_BACKEND": "openai", "OPENAI_BASE_URL": endpoint + "/v1", "PHI_MODEL": "any"}
    )
    with openai_client(as_openai) as client:
        response = client.chat.completions.create(
            model=as_openai.model,
            messages=[{"role": "user", "content": QUESTION}],
            max_tokens=8,
        )
    assert response.choices[0].message.content

    # The local server as a stand-in for Microsoft Foundry: a URL with a path is taken as given.
    as_azure = load_settings(
        env={
            "PHI_BACKEND": "azure",
            "AZURE_OPENAI_ENDPOINT": endpoint + "/v1/",
            "AZURE_OPENAI_API_KEY": "k",
            "PHI_MODEL": "Phi-3-small-8k-instruct",  # the seed's name; no download needed
        }
    )
    assert as_azure.openai_base_url == endpoint + "/v1"
    with openai_client(as_azure) as client:
        response = client.chat.completions.create(
            model=as_azure.model,
            messages=[{"role": "user", "content": QUESTION}],
            max_tokens=8,
        )
    assert response.choices[0].message.content
    assert response.model == settings.model
    with chat_client(as_azure) as client:
        response = client.complete(
            messages=[UserMessage(content=QUESTION)], model=as_azure.model, max_tokens=8
        )
    assert response.choices[0].message.content
    assert response.model == settings.model


def test_factories_pass_client_options_through():
    with openai_client(max_retries=0, timeout=12.5) as client:
        assert client.max_retries == 0 and client.timeout == 12.5
    with chat_client(user_agent="phihelpers-test") as client:
        assert "phihelpers-test" in client._config.user_agent_policy.user_agent


# -- openai: the model from GET /models when PHI_MODEL is not set ----------------------------
def openai_env(base: str, **extra: str) -> dict[str, str]:
    return {"PHI_BACKEND": "openai", "OPENAI_BASE_URL": base, **extra}


def test_connect_takes_the_one_model_the_project_server_lists(settings):
    """The real local server through PHI_BACKEND=openai and OPENAI_BASE_URL alone."""
    s = connect(load_settings(env=openai_env(settings.endpoint + "/v1")))
    assert s.model == running_server()["model"] == settings.model
    with openai_client(s) as client:
        response = client.chat.completions.create(
            model=s.model, messages=[{"role": "user", "content": QUESTION}], max_tokens=8
        )
    assert response.model == settings.model


def test_connect_takes_the_one_model_a_server_lists_and_uses_it():
    with OpenAIStub(models=["phi4-mini:latest"]) as stub:
        s = connect(load_settings(env=openai_env(stub.url + "/v1/")))
        assert s.model == "phi4-mini:latest"
        assert s.openai_base_url == s.endpoint == stub.url + "/v1"
        with openai_client(s) as client:
            client.chat.completions.create(
                model=s.model, messages=[{"role": "user", "content": "hi"}]
            )
    asked, chat = stub.seen
    assert (asked.method, asked.path) == ("GET", "/v1/models")
    assert "authorization" not in {k.lower() for k in asked.headers}  # no key set: none sent
    assert (chat.path, chat.body["model"]) == ("/v1/chat/completions", "phi4-mini:latest")


def test_several_models_name_them_and_say_to_set_phi_model():
    models = ["phi4-mini:latest", "phi4:14b", "llama3.2:1b"]
    with OpenAIStub(models=models) as stub, pytest.raises(ConfigError) as err:
        connect(load_settings(env=openai_env(stub.url + "/v1")))
    message = str(err.value)
    for name in models:
        assert name in message
    assert "3 models" in message and "PHI_MODEL" in message
    assert "PHI_MODEL=phi4-mini:latest" in message  # an exact value to copy


def test_many_models_are_shortened():
    models = [f"model-{i:02d}" for i in range(30)]
    with OpenAIStub(models=models) as stub, pytest.raises(ConfigError) as err:
        connect(load_settings(env=openai_env(stub.url + "/v1")))
    assert "model-11" in str(err.value) and "model-12" not in str(err.value)
    assert "and 18 more" in str(err.value)


def test_phi_model_set_means_the_server_is_not_asked():
    with OpenAIStub(models=["a", "b"]) as stub:
        s = load_settings(env=openai_env(stub.url + "/v1", PHI_MODEL="b"))
        assert connect(s) is s
    assert stub.seen == []


def test_a_server_that_lists_no_model_says_so():
    with OpenAIStub(models=[]) as stub, pytest.raises(ConfigError) as err:
        connect(load_settings(env=openai_env(stub.url + "/v1")))
    assert "lists no model" in str(err.value) and "PHI_MODEL" in str(err.value)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_nothing_listening_says_what_to_check():
    base = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(BackendUnreachableError) as err:
        connect(load_settings(env=openai_env(base)))
    message = str(err.value)
    assert isinstance(err.value, ConfigError)
    assert f"OPENAI_BASE_URL={base}" in message
    assert "running" in message and "/v1" in message
    assert "Traceback" not in message


def test_a_wrong_path_is_answered_with_what_to_check():
    with OpenAIStub() as stub, pytest.raises(BackendUnreachableError) as err:
        connect(load_settings(env=openai_env(stub.url)))  # forgot the /v1
    message = str(err.value)
    assert "HTTP 404" in message and "OPENAI_BASE_URL" in message and "PHI_MODEL" in message


def test_a_server_that_answers_something_else_than_a_model_list():
    with OpenAIStub(models_body='{"models": ["x"]}') as stub, pytest.raises(ConfigError) as err:
        connect(load_settings(env=openai_env(stub.url + "/v1")))
    assert "model list" in str(err.value)


def test_the_key_is_sent_when_asking_and_a_refusal_names_the_variable():
    with OpenAIStub(models=["m"], key=SECRET) as stub:
        with pytest.raises(BackendUnreachableError) as err:
            connect(load_settings(env=openai_env(stub.url + "/v1", OPENAI_API_KEY="wrong")))
        assert "HTTP 401" in str(err.value) and "OPENAI_API_KEY" in str(err.value)
        assert "wrong" not in str(err.value)
        s = connect(load_settings(env=openai_env(stub.url + "/v1", OPENAI_API_KEY=SECRET)))
    assert s.model == "m"
    assert stub.seen[-1].headers["authorization"] == f"Bearer {SECRET}"
    assert SECRET not in repr(s)


# -- azure: Microsoft Foundry's OpenAI v1 API, with a key or keyless ------------------------
class FakeCredential:
    """An azure-identity credential stand-in: hands out numbered tokens, records the scopes.

    `lifetime` seconds: under azure-core's 300 s refresh margin, every use asks again."""

    def __init__(self, lifetime: int = 3600, fail: bool = False):
        self.lifetime, self.fail, self.scopes = lifetime, fail, []

    def get_token(self, *scopes, **kwargs):
        if self.fail:
            raise ClientAuthenticationError("DefaultAzureCredential failed to retrieve a token")
        self.scopes.append(scopes)
        return AccessToken(f"fake-entra-token-{len(self.scopes)}", int(time.time()) + self.lifetime)


def azure_env(endpoint: str, **extra: str) -> dict[str, str]:
    return {"PHI_BACKEND": "azure", "AZURE_OPENAI_ENDPOINT": endpoint, **extra}


def test_azure_with_a_key_at_the_resource_root():
    """The root gets /openai/v1; the OpenAI SDK sends the key as a bearer token, no api-version."""
    with OpenAIStub(key=SECRET) as stub:
        s = connect(load_settings(env=azure_env(stub.url, AZURE_OPENAI_API_KEY=SECRET)))
        assert s.openai_base_url == stub.url + "/openai/v1"
        assert s.model == "Phi-4-mini-instruct"  # the default deployment name; nothing asked
        assert stub.seen == []
        with openai_client(s) as client:
            response = client.chat.completions.create(
                model=s.model, messages=[{"role": "user", "content": "hi"}]
            )
    assert response.choices[0].message.content == "Paris."
    (chat,) = stub.seen
    assert chat.path == "/openai/v1/chat/completions" and chat.query == ""
    assert chat.headers["authorization"] == f"Bearer {SECRET}"
    assert chat.body["model"] == "Phi-4-mini-instruct"


def test_azure_keyless_fetches_one_token_for_credential_key():
    fake = FakeCredential()
    with OpenAIStub() as stub:
        s = connect(load_settings(env=azure_env(stub.url), credential=fake))
    assert fake.scopes == [(AZURE_TOKEN_SCOPE,)]
    assert s.keyless and not s.key_is_set and s.auth == "entra"
    assert s.credential_key == "fake-entra-token-1"  # what the lessons' plain code hands over
    assert callable(s.token_provider)
    assert connect(s) is s  # already connected: no second token
    for text in (repr(s), str(s), f"{s!r}"):
        assert "fake-entra-token" not in text and "keyless" in text


def test_azure_keyless_credential_can_be_passed_to_connect():
    fake = FakeCredential()
    s = connect(
        load_settings(env=azure_env("https://res.openai.azure.com/openai/v1/")), credential=fake
    )
    assert s.credential is fake and s.credential_key == "fake-entra-token-1"


def test_openai_client_keyless_refreshes_the_token_on_each_request():
    """openai_client() hands the token provider itself to OpenAI(api_key=...)."""
    fake = FakeCredential(lifetime=60)  # always inside the refresh margin
    with OpenAIStub() as stub:
        with openai_client(load_settings(env=azure_env(stub.url)), credential=fake) as client:
            for _ in range(2):
                client.chat.completions.create(
                    model="Phi-4-mini-instruct", messages=[{"role": "user", "content": "hi"}]
                )
    sent = [r.headers["authorization"] for r in stub.requests_to("/chat/completions")]
    assert len(sent) == 2 and len(set(sent)) == 2  # a fresh token each time
    handed_out = {f"Bearer fake-entra-token-{i}" for i in range(1, len(fake.scopes) + 1)}
    assert set(sent) <= handed_out and all(s == (AZURE_TOKEN_SCOPE,) for s in fake.scopes)


def test_chat_client_keyless_sends_the_token():
    fake = FakeCredential()
    with OpenAIStub() as stub:
        s = load_settings(env=azure_env(stub.url + "/v1"), credential=fake)
        with chat_client(s) as client:
            response = client.complete(messages=[UserMessage(content="hi")], model="phi")
    assert response.choices[0].message.content == "Paris."
    (chat,) = stub.seen
    assert chat.headers["authorization"] == "Bearer fake-entra-token-1"


def test_azure_keyless_without_a_sign_in_says_what_to_do():
    with pytest.raises(ConfigError) as err:
        connect(
            load_settings(env=azure_env("https://res.openai.azure.com")),
            credential=FakeCredential(fail=True),
        )
    message = str(err.value)
    assert "az login" in message and "AZURE_OPENAI_API_KEY" in message
    assert "Entra ID" in message
