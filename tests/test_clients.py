"""phihelpers.clients: connect(), chat_client() and openai_client() against the real local server,
with the real azure-ai-inference and openai clients, streaming and not."""

from __future__ import annotations

from azure.ai.inference import ChatCompletionsClient
from azure.ai.inference.models import SystemMessage, UserMessage
from openai import OpenAI

from phihelpers import chat_client, connect, openai_client
from phihelpers.config import NO_KEY, load_settings
from phihelpers.local import running_server

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

    as_azure = load_settings(
        env={
            "PHI_BACKEND": "azure",
            "AZURE_AI_ENDPOINT": endpoint,
            "AZURE_AI_API_KEY": "k",
            "PHI_MODEL": "Phi-3-small-8k-instruct",  # the seed's name; no download needed
        }
    )
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
