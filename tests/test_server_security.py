"""Who gets in: loopback by default, a key for anything else, CORS only when asked, no prompts
or keys in the log.

The key server binds 0.0.0.0 with PHI_LOCAL_API_KEY set and is reached through 127.0.0.1. The
keys are made fresh per session (tests/server_process.py) and tests/test_secrets.py checks that
none of them reaches a log, a notebook or git.
"""

from __future__ import annotations

import socket
import uuid

import httpx
import pytest
from server_process import TEST_KEYS, run_serve, start_server

KEY = TEST_KEYS["server"]
WRONG = TEST_KEYS["wrong"]
ORIGIN = "http://localhost:5173"
ASK = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}


@pytest.fixture(scope="module")
def key_server(tmp_path_factory):
    server = start_server(
        tmp_path_factory.mktemp("keyed") / "state",
        "--host", "0.0.0.0", "--cors-origin", ORIGIN, "--access-log",
        api_key=KEY,
    )  # fmt: skip
    yield server
    assert server.stop() == 0


@pytest.fixture(scope="module")
def plain_server(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("plain") / "state")
    yield server
    assert server.stop() == 0


def _lan_address() -> str | None:
    """This machine's address on its network, if it has one (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: only picks the outgoing interface
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_binds_loopback_by_default(plain_server):
    assert plain_server.state["host"] == "127.0.0.1"
    assert plain_server.state["key_required"] is False
    address = _lan_address()
    if address is None:
        pytest.skip("no non-loopback address on this machine to try")
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://{address}:{plain_server.state['port']}/health", timeout=5)


def test_refuses_a_non_loopback_bind_without_a_key(tmp_path):
    proc = run_serve(tmp_path / "state", "--host", "0.0.0.0")
    assert proc.wait(60) == 2
    out = (tmp_path / "state" / "server.log").read_text()
    assert "refusing to listen on 0.0.0.0 without an API key" in out
    assert "PHI_LOCAL_API_KEY" in out and "Traceback" not in out
    assert not (tmp_path / "state" / "server.json").exists()


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": f"Bearer {KEY}"},
        {"api-key": KEY},
        {"Authorization": f"Bearer {KEY}", "api-key": KEY},  # what azure-ai-inference sends
        {"authorization": f"bearer {KEY}"},
    ],
    ids=["bearer", "api-key", "both", "lower-case"],
)
def test_the_right_key_is_accepted_either_way(key_server, headers):
    for method, path, body in [
        ("POST", "/chat/completions", ASK),
        ("POST", "/v1/chat/completions", ASK),
        ("GET", "/info", None),
        ("GET", "/v1/models", None),
    ]:
        r = httpx.request(method, key_server.url + path, json=body, headers=headers, timeout=120)
        assert r.status_code == 200, (path, r.text)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": f"Bearer {WRONG}"},
        {"api-key": WRONG},
        {"Authorization": KEY},  # no "Bearer "
        {"Authorization": f"Basic {KEY}"},
        {"Authorization": f"Bearer {KEY[:-1]}"},
        {"Authorization": f"Bearer {KEY}x"},
        {"Authorization": f"Bearer {WRONG}", "api-key": KEY},  # the Bearer is what counts
        {"api-key": ""},
    ],
    ids=[
        "missing",
        "wrong-bearer",
        "wrong-api-key",
        "no-scheme",
        "basic",
        "prefix",
        "longer",
        "wrong-bearer-right-api-key",
        "empty",
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_a_wrong_or_missing_key_gets_401(key_server, headers, stream):
    for method, path, body in [
        ("POST", "/chat/completions", {**ASK, "stream": stream}),
        ("GET", "/info", None),
        ("GET", "/v1/models", None),
    ]:
        r = httpx.request(method, key_server.url + path, json=body, headers=headers, timeout=60)
        assert r.status_code == 401, (path, r.status_code, r.text)
        assert r.headers["content-type"].startswith("application/json")
        assert "retry-after" not in r.headers
        error = r.json()["error"]
        assert error["code"] == "unauthorized" and "api-key" in error["message"]
        assert KEY not in r.text and WRONG not in r.text


def test_health_needs_no_key(key_server):
    assert httpx.get(key_server.url + "/health").status_code == 200


def test_the_sdks_with_the_key_get_in_and_without_it_do_not(key_server):
    import openai
    from azure.ai.inference import ChatCompletionsClient
    from azure.core.credentials import AzureKeyCredential
    from azure.core.exceptions import ClientAuthenticationError

    with ChatCompletionsClient(key_server.url, AzureKeyCredential(KEY)) as client:
        assert client.complete(messages=ASK["messages"], max_tokens=1).choices
    with ChatCompletionsClient(key_server.url, AzureKeyCredential(WRONG)) as client:
        with pytest.raises(ClientAuthenticationError):
            client.complete(messages=ASK["messages"], max_tokens=1)
    with openai.OpenAI(base_url=key_server.url + "/v1", api_key=KEY) as client:
        assert client.chat.completions.create(model="m", max_tokens=1, messages=ASK["messages"])
    with openai.OpenAI(base_url=key_server.url + "/v1", api_key=WRONG, max_retries=0) as client:
        with pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(model="m", max_tokens=1, messages=ASK["messages"])


def _preflight(url: str, origin: str) -> httpx.Response:
    return httpx.options(
        url + "/chat/completions",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )


def test_cors_is_off_by_default(plain_server):
    pre = _preflight(plain_server.url, ORIGIN)
    assert pre.status_code == 405
    assert "access-control-allow-origin" not in pre.headers
    r = httpx.post(
        plain_server.url + "/chat/completions", json=ASK, headers={"Origin": ORIGIN}, timeout=60
    )
    assert r.status_code == 200
    assert "access-control-allow-origin" not in r.headers


def test_cors_allows_only_the_configured_origin(key_server):
    pre = _preflight(key_server.url, ORIGIN)
    assert pre.status_code == 200
    assert pre.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in pre.headers["access-control-allow-methods"]
    r = httpx.post(
        key_server.url + "/chat/completions",
        json=ASK,
        headers={"Origin": ORIGIN, "api-key": KEY},
        timeout=60,
    )
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == ORIGIN
    other = _preflight(key_server.url, "https://evil.example")
    assert other.headers.get("access-control-allow-origin") != "https://evil.example"
    assert other.status_code >= 400


def _send_marker(server, key: str | None = None) -> str:
    marker = f"prompt-marker-{uuid.uuid4().hex}"
    headers = {"api-key": key} if key else {}
    body = {"messages": [{"role": "user", "content": f"Repeat {marker}"}], "max_tokens": 1}
    r = httpx.post(server.url + "/chat/completions", json=body, headers=headers, timeout=120)
    assert r.status_code == 200
    bad = {"messages": [{"role": "wizard", "content": marker}]}  # an error path too
    assert httpx.post(server.url + "/chat/completions", json=bad, headers=headers).status_code
    return marker


def test_prompts_are_not_logged_by_default(plain_server, key_server):
    for server, key in ((plain_server, None), (key_server, KEY)):
        marker = _send_marker(server, key)
        assert marker not in server.log()
    assert "POST /chat/completions" in key_server.log()  # its access log is on: no prompt there


def test_prompts_are_logged_when_asked(tmp_path):
    server = start_server(tmp_path / "state", "--log-prompts")
    try:
        marker = _send_marker(server)
    finally:
        assert server.stop() == 0
    assert marker in server.log()


def test_keys_never_reach_the_log(key_server):
    httpx.get(key_server.url + "/info", headers={"api-key": WRONG})
    httpx.get(key_server.url + "/info", headers={"Authorization": f"Bearer {KEY}"})
    log = key_server.log()
    assert "GET /info" in log  # the access log is on, and shows the request...
    assert KEY not in log and WRONG not in log  # ...but never its key


def test_server_settings_never_show_the_key():
    from phihelpers.server.settings import ServeSettings

    settings = ServeSettings.build(api_key=KEY)
    assert KEY not in repr(settings) and KEY not in str(settings)
    assert KEY not in " ".join(settings.command_line())  # the key travels in the env only
    assert KEY not in settings.model_dump_json()


# -- item 6: weak keys do not open a public bind; attendee keys do (tests/test_keys.py) -----------
@pytest.mark.parametrize("weak", ["a", "12345678", "passwordpassword"])
def test_a_weak_key_does_not_open_a_public_bind(tmp_path, weak):
    proc = run_serve(tmp_path / "state", "--host", "0.0.0.0", api_key=weak)
    assert proc.wait(60) == 2
    out = (tmp_path / "state" / "server.log").read_text()
    assert "refusing to listen on 0.0.0.0 with a weak PHI_LOCAL_API_KEY" in out
    assert 'python -c "import secrets; print(secrets.token_urlsafe(24))"' in out
    assert "Traceback" not in out and not (tmp_path / "state" / "server.json").exists()
    if len(weak) > 1:
        assert weak not in out  # the refusal never repeats the key


def test_a_keys_file_alone_opens_a_public_bind(tmp_path):
    from phihelpers.keys import create_keys

    keys = {a.name: a.key for a in create_keys(tmp_path / "room.csv", ["alice"])}
    TEST_KEYS["attendee alice (public bind)"] = keys["alice"]
    server = start_server(
        tmp_path / "state", "--host", "0.0.0.0", "--keys-file", str(tmp_path / "room.csv")
    )
    try:
        assert (
            httpx.get(server.url + "/info", headers={"api-key": keys["alice"]}).status_code == 200
        )
        assert httpx.get(server.url + "/info").status_code == 401  # every request needs a key
        admin = httpx.get(server.url + "/admin/usage", headers={"api-key": keys["alice"]})
        assert admin.status_code == 403 and "PHI_LOCAL_API_KEY" in admin.text  # no teacher's key
    finally:
        assert server.stop() == 0
