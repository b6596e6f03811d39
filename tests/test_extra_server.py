"""start_extra_server(): a real second server with its own settings, driven by the real clients."""

from __future__ import annotations

import os
import secrets

import httpx
import pytest
from azure.ai.inference import ChatCompletionsClient
from azure.ai.inference.models import UserMessage
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError

from phihelpers import LocalServerError
from phihelpers.extra_server import start_extra_server

KEY = secrets.token_urlsafe(16)
BODY = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}


@pytest.fixture(scope="module")
def strict():
    """A server like a hosted service: a key, 2 requests per 5 s, a content filter."""
    with start_extra_server(
        rate_limit_rpm=2, rate_limit_window=5, content_filter_phrase="forbidden topic",
        api_key=KEY,
    ) as server:  # fmt: skip
        yield server


def test_runs_on_its_own_port_and_state_dir(strict, settings):
    assert strict.running
    assert strict.endpoint != settings.endpoint
    health = httpx.get(strict.endpoint + "/health").json()
    assert health["pid"] == strict.proc.pid
    assert (strict.state_dir / "server.json").is_file()
    assert KEY not in repr(strict)
    assert "--rate-limit-window" in strict.command and KEY not in " ".join(strict.command)


def test_stop_ends_the_process_and_removes_its_directory():
    server = start_extra_server()
    endpoint, state_dir = server.endpoint, server.state_dir
    assert httpx.get(endpoint + "/health").status_code == 200
    server.stop()
    assert not server.running
    assert not state_dir.exists()
    with pytest.raises(httpx.ConnectError):
        httpx.get(endpoint + "/health", timeout=2)
    server.stop()  # a second stop is harmless


def test_bad_serve_option_fails_with_the_servers_message():
    with pytest.raises(LocalServerError, match="rate-limit-window must be a positive"):
        start_extra_server(rate_limit_window=0)


def test_caller_key_does_not_leak_into_a_keyless_server(monkeypatch):
    monkeypatch.setenv("PHI_LOCAL_API_KEY", "from-the-callers-env")
    with start_extra_server() as server:
        r = httpx.post(server.endpoint + "/chat/completions", json=BODY, timeout=60)
    assert r.status_code == 200
    assert os.environ["PHI_LOCAL_API_KEY"] == "from-the-callers-env"


def test_wrong_key_is_401_in_the_api_shape(strict):
    client = ChatCompletionsClient(endpoint=strict.endpoint, credential=AzureKeyCredential("wrong"))
    with pytest.raises(ClientAuthenticationError) as info:
        client.complete(messages=[UserMessage(content="Hi")], max_tokens=1)
    assert info.value.status_code == 401
    assert info.value.error.code == "unauthorized"


def test_content_filter_phrase_is_refused_like_azure(strict):
    client = ChatCompletionsClient(endpoint=strict.endpoint, credential=AzureKeyCredential(KEY))
    with pytest.raises(HttpResponseError) as info:
        client.complete(messages=[UserMessage(content="Tell me about the Forbidden Topic")])
    assert info.value.status_code == 400
    assert info.value.error.code == "content_filter"


def test_short_rate_limit_window_gives_429_then_sdk_retry_gets_through(strict):
    headers = {"api-key": KEY}
    statuses = []
    for _ in range(6):  # requests run one after another: the third within 5 s is refused
        r = httpx.post(
            strict.endpoint + "/chat/completions", json=BODY, headers=headers, timeout=60
        )
        statuses.append(r.status_code)
        if r.status_code == 429:
            break
    assert statuses[-1] == 429, statuses
    assert r.json()["error"]["code"] == "too_many_requests"
    assert "per 5 seconds" in r.json()["error"]["message"]
    assert 1 <= int(r.headers["Retry-After"]) <= 5
    assert 0 <= int(r.headers["retry-after-ms"]) <= 5000

    seen = []
    client = ChatCompletionsClient(endpoint=strict.endpoint, credential=AzureKeyCredential(KEY))
    client.complete(
        messages=[UserMessage(content="Hi")],
        max_tokens=1,
        raw_response_hook=lambda resp: seen.append(resp.http_response.status_code),
    )
    # azure-core honoured Retry-After: it came back after the window, without raising.
    assert seen[-1] == 200
    assert set(seen[:-1]) <= {429}
