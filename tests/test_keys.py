"""Attendee keys for a workshop server: the keys file, per-attendee limits, revocation without a
restart and the teacher's usage table, through the real clients (azure-ai-inference, openai).

The keys are made fresh in tmp dirs and registered in server_process.TEST_KEYS, so every test
server's stop() (and tests/test_secrets.py) also checks that none of them reaches a log.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest
from azure.ai.inference import ChatCompletionsClient, EmbeddingsClient
from azure.ai.inference.models import UserMessage
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import ClientAuthenticationError
from secret_scan import find_secrets
from server_process import ROOT, TEST_KEYS, start_server

from phihelpers.keys import (
    MAKE_A_STRONG_KEY,
    Keyring,
    KeysFileError,
    create_keys,
    key_weakness,
    read_keys,
    revoke_keys,
)
from phihelpers.server.bootstrap import _refusal
from phihelpers.server.settings import ServeSettings

ADMIN_KEY = TEST_KEYS["server"]  # the teacher's key: fresh each session, strong
NAMES = ["alice", "bob", "carol", "dave", "erin"]  # one per test below: their limits are apart
HI = [{"role": "user", "content": "Hi"}]


def phi(*args: str, admin_key: str | None = None) -> subprocess.CompletedProcess:
    """`python -m phihelpers ARGS` as a teacher runs it (PHI_LOCAL_API_KEY only if given)."""
    env = {k: v for k, v in os.environ.items() if k != "PHI_LOCAL_API_KEY"}
    if admin_key:
        env["PHI_LOCAL_API_KEY"] = admin_key
    return subprocess.run(
        [sys.executable, "-m", "phihelpers", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )


def keys_of(path: Path) -> dict[str, str]:
    return {a.name: a.key for a in read_keys(path)}


def register(keys: dict[str, str]) -> None:
    TEST_KEYS.update({f"attendee {name}": key for name, key in keys.items()})


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- the keys file ------------------------------------------------------------------------------
def test_new_writes_a_private_file_of_strong_distinct_keys_and_prints_none(tmp_path):
    out = tmp_path / "room-keys.csv"
    done = phi("keys", "new", "30", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert mode(out) == 0o600
    assert out.read_text().splitlines()[0] == "name,key,created,revoked"
    keys = keys_of(out)
    register(keys)
    assert list(keys) == [f"attendee-{i:02d}" for i in range(1, 31)]
    assert len(set(keys.values())) == 30
    for key in keys.values():
        assert key.startswith("phi-") and len(key) >= 36 and key_weakness(key) is None
    assert str(out) in done.stdout and "keys list" in done.stdout
    assert not find_secrets(done.stdout + done.stderr, {f"k{i}": k for i, k in enumerate(keys)})
    assert not any(key in done.stdout for key in keys.values())


def test_new_refuses_to_overwrite_unless_forced(tmp_path):
    out = tmp_path / "room-keys.csv"
    assert phi("keys", "new", "2", "--out", str(out)).returncode == 0
    before = out.read_text()
    again = phi("keys", "new", "2", "--out", str(out))
    assert again.returncode == 2 and "already exists" in again.stderr and "--force" in again.stderr
    assert out.read_text() == before
    forced = phi("keys", "new", "2", "--out", str(out), "--force")
    assert forced.returncode == 0 and out.read_text() != before and mode(out) == 0o600
    register(keys_of(out))


def test_names_from_a_list_or_a_file_and_keys_shown_only_when_asked(tmp_path):
    names_file = tmp_path / "names.txt"
    names_file.write_text("# the morning group\nalice\n\nbob\n")
    out = tmp_path / "a.csv"
    done = phi("keys", "new", "--names", str(names_file), "--out", str(out), "--show")
    assert done.returncode == 0, done.stderr
    keys = keys_of(out)
    register(keys)
    assert list(keys) == ["alice", "bob"]
    assert all(key in done.stdout for key in keys.values())  # --show: for handing them out
    listed = phi("keys", "list", str(out))
    assert "alice" in listed.stdout and not any(k in listed.stdout for k in keys.values())
    shown = phi("keys", "list", str(out), "--show")
    assert all(key in shown.stdout for key in keys.values())
    b = phi("keys", "new", "2", "--names", "carol,dave", "--out", str(tmp_path / "b.csv"))
    assert b.returncode == 0 and list(keys_of(tmp_path / "b.csv")) == ["carol", "dave"]
    register(keys_of(tmp_path / "b.csv"))
    for names, words in (
        ("carol,dave,erin", "2 keys asked for, but 3 names"),
        ("Alice,alice", "twice"),
        ("admin", "teacher's key"),
        ("bad name", "not a usable name"),
    ):
        bad = phi("keys", "new", "2", "--names", names, "--out", str(tmp_path / "c.csv"))
        assert bad.returncode == 2 and words in bad.stderr, bad.stderr
        assert not (tmp_path / "c.csv").exists()


def test_revoke_and_add_keep_the_file_private(tmp_path):
    out = tmp_path / "room.csv"
    create_keys(out, ["alice", "bob"])
    out.chmod(0o644)  # loosened by hand: the next write makes it private again
    done = phi("keys", "revoke", str(out), "bob")
    assert done.returncode == 0 and "revoked bob" in done.stdout
    attendees = {a.name: a for a in read_keys(out)}
    assert attendees["alice"].active and not attendees["bob"].active
    assert attendees["bob"].revoked.startswith("20") and mode(out) == 0o600
    unknown = phi("keys", "revoke", str(out), "zed")
    assert unknown.returncode == 2 and "no attendee zed" in unknown.stderr
    assert "alice, bob" in unknown.stderr
    added = phi("keys", "add", str(out), "carol")
    keys = keys_of(out)
    register(keys)
    assert added.returncode == 0 and list(keys) == ["alice", "bob", "carol"]
    assert keys["carol"] not in added.stdout


@pytest.mark.parametrize(
    ("row", "words"),
    [
        ("alice,12345678,,", "too weak: it is shorter than 16 characters"),
        ("alice,aaaaaaaaaaaaaaaaaaaaaaaa,,", "fewer than 10 different characters"),
        ("alice,{strong},,\nbob,{strong},,", "the same key is given to someone else too"),
        ("admin,{strong},,", "teacher's key"),
    ],
)
def test_a_hand_edited_file_is_checked_and_never_echoes_a_key(tmp_path, row, words):
    strong = "phi-" + "Kx7_mQ2v-Ln9pR4s" * 2
    path = tmp_path / "room.csv"
    path.write_text("name,key,created,revoked\n" + row.format(strong=strong) + "\n")
    with pytest.raises(KeysFileError, match=words) as err:
        read_keys(path)
    for secret in (strong, "12345678", "aaaaaaaa"):
        assert secret not in str(err.value)


def test_the_keyring_finds_keys_and_follows_the_file(tmp_path):
    path = tmp_path / "room.csv"
    keys = {a.name: a.key for a in create_keys(path, ["alice", "bob"])}
    register(keys)
    ring = Keyring(path, check_every=0)
    assert ring.match(keys["bob"]).name == "bob" and ring.match(keys["bob"]).active
    assert ring.match("phi-" + "unknown-key-0123" * 2) is None and ring.match("") is None
    revoke_keys(path, ["bob"])
    assert not ring.match(keys["bob"]).active  # re-read: the file changed
    path.write_text("name,key\nalice,short\n")  # a bad hand edit: the keys known stay
    assert ring.match(keys["alice"]).name == "alice" and not ring.match(keys["bob"]).active
    path.write_text("\ufeff" + path.read_text().replace("short", keys["alice"]))  # BOM: fine
    assert ring.match(keys["alice"]).name == "alice" and ring.match(keys["bob"]) is None


# -- weak keys and public binds (item 6) ------------------------------------------------------
@pytest.mark.parametrize(
    "key", ["a", "12345678", "aaaaaaaaaaaaaaaaaaaaaaaa", "abcdabcdabcdabcdabcd"]
)
def test_a_weak_admin_key_does_not_open_a_public_bind(key):
    refusal = _refusal(ServeSettings.build(host="0.0.0.0", api_key=key))
    assert refusal and "weak PHI_LOCAL_API_KEY" in refusal and MAKE_A_STRONG_KEY in refusal
    if len(key) > 4:  # never repeated (a one-letter key is in any sentence)
        assert key not in refusal
    assert _refusal(ServeSettings.build(host="127.0.0.1", api_key=key)) is None  # loopback: fine


def test_a_strong_key_or_a_keys_file_opens_a_public_bind(tmp_path):
    assert _refusal(ServeSettings.build(host="0.0.0.0", api_key=ADMIN_KEY)) is None
    path = tmp_path / "room.csv"
    keys = {a.name: a.key for a in create_keys(path, ["alice"])}
    register(keys)
    assert _refusal(ServeSettings.build(host="0.0.0.0", keys_file=path)) is None
    nothing = _refusal(ServeSettings.build(host="0.0.0.0"))
    assert "without an API key" in nothing and "--keys-file" in nothing
    missing = _refusal(ServeSettings.build(host="0.0.0.0", keys_file=tmp_path / "none.csv"))
    assert "does not exist" in missing and "keys new" in missing
    shared = _refusal(ServeSettings.build(keys_file=path, api_key=keys["alice"]))
    assert "also an attendee's key" in shared and keys["alice"] not in shared


def test_the_keys_file_setting_is_a_flag_with_an_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = ServeSettings.build(keys_file=Path("room.csv"))
    assert s.keys_file == tmp_path / "room.csv"
    assert s.command_line() == ["--keys-file", str(tmp_path / "room.csv")]


# -- a real server with attendee keys -----------------------------------------------------------
@pytest.fixture(scope="module")
def room(tmp_path_factory):
    """A server with a keys file, the teacher's key and 2 requests per 10 minutes per key."""
    base = tmp_path_factory.mktemp("room")
    path = base / "room-keys.csv"
    keys = {a.name: a.key for a in create_keys(path, NAMES)}
    register(keys)
    server = start_server(
        base / "state",
        "--keys-file", str(path), "--rate-limit-rpm", "2", "--rate-limit-window", "600",
        "--access-log", "--log-prompts",
        api_key=ADMIN_KEY,
    )  # fmt: skip
    server.keys, server.keys_file = keys, path
    yield server
    assert server.stop() == 0  # and its log holds none of the keys (ServerProcess.stop)


def oai(room, name: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=room.url + "/v1", api_key=room.keys[name], max_retries=0)


def azure_chat(room, name: str) -> ChatCompletionsClient:
    return ChatCompletionsClient(endpoint=room.url, credential=AzureKeyCredential(room.keys[name]))


def ask(client: openai.OpenAI):
    return client.chat.completions.create(model="any", messages=HI, max_tokens=3)


def test_an_attendee_key_works_on_every_route_that_needs_a_key(room):
    with azure_chat(room, "alice") as chat:
        assert chat.complete(messages=[UserMessage(content="Hi")], max_tokens=3).choices
        assert chat.get_model_info().model_name
    key = AzureKeyCredential(room.keys["alice"])
    with EmbeddingsClient(endpoint=room.url, credential=key) as embed:
        assert embed.embed(input=["Paris"]).data[0].embedding
    with oai(room, "alice") as client:
        assert client.models.list().data
    wrong = openai.OpenAI(base_url=room.url + "/v1", api_key="phi-" + "x1y2z3" * 6, max_retries=0)
    with wrong, pytest.raises(openai.AuthenticationError) as err:
        wrong.models.list()
    assert "attendee's key" in err.value.message


def test_one_attendees_429_does_not_stop_another(room):
    with oai(room, "bob") as bob, oai(room, "carol") as carol:
        ask(bob), ask(bob)
        with pytest.raises(openai.RateLimitError) as err:
            ask(bob)
        assert "Rate limit reached: 2 requests" in err.value.message
        assert ask(carol).choices  # carol has her own budget
        assert ask(carol).choices


def test_a_revoked_key_gets_401_without_a_restart(room):
    pid = room.proc.pid
    with oai(room, "erin") as erin:
        assert erin.models.list().data
        done = phi("keys", "revoke", str(room.keys_file), "erin")
        assert done.returncode == 0, done.stderr
        deadline = time.monotonic() + 5
        while True:
            try:
                erin.models.list()
            except openai.AuthenticationError as err:
                assert "was revoked" in err.message and "erin" in err.message
                break
            assert time.monotonic() < deadline, "the revocation was not noticed within 5 s"
            time.sleep(0.2)
    with azure_chat(room, "erin") as chat, pytest.raises(ClientAuthenticationError) as err:
        chat.complete(messages=[UserMessage(content="Hi")], max_tokens=3)
    assert "revoked" in str(err.value)
    assert "now also: erin" in room.log()  # the server noticed, and logged it by name
    added = phi("keys", "add", str(room.keys_file), "frank")
    assert added.returncode == 0
    room.keys["frank"] = keys_of(room.keys_file)["frank"]
    register(room.keys)
    time.sleep(1.1)  # the server looks at the file at most once a second
    with oai(room, "frank") as frank:
        assert frank.models.list().data  # a late attendee, no restart either
    assert room.proc.poll() is None and room.proc.pid == pid
    assert httpx.get(room.url + "/health", timeout=5).json()["pid"] == pid


def admin_usage(room, key: str | None = ADMIN_KEY) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.get(room.url + "/admin/usage", headers=headers, timeout=10)


def test_the_usage_table_counts_requests_tokens_and_429s_per_attendee(room):
    with azure_chat(room, "dave") as chat:
        first = chat.complete(messages=[UserMessage(content="Hi")], max_tokens=3).usage
    with oai(room, "dave") as dave:
        stream = dave.chat.completions.create(
            model="any",
            messages=HI,
            max_tokens=3,
            stream=True,
            stream_options={"include_usage": True},
        )
        second = [c for c in stream][-1].usage
        with pytest.raises(openai.RateLimitError):
            ask(dave)
        dave.models.list()
    r = admin_usage(room)
    assert r.status_code == 200, r.text
    rows = {row["name"]: row for row in r.json()["data"]}
    assert list(rows)[: len(NAMES)] == NAMES  # every attendee, in the file's order
    d = rows["dave"]
    assert (d["requests"], d["rate_limited"]) == (4, 1)
    assert d["prompt_tokens"] == first.prompt_tokens + second.prompt_tokens
    assert d["completion_tokens"] == first.completion_tokens + second.completion_tokens
    assert d["total_tokens"] == d["prompt_tokens"] + d["completion_tokens"] > 0
    assert d["revoked"] is None and d["last_request"].startswith("20")
    assert r.json()["keys_file"] == "room-keys.csv"
    assert not find_secrets(r.text, TEST_KEYS)


def test_the_usage_view_needs_the_teachers_key(room):
    assert admin_usage(room, None).status_code == 401
    assert admin_usage(room, "phi-" + "not-a-key" * 4).status_code == 401
    as_attendee = admin_usage(room, room.keys["alice"])
    assert as_attendee.status_code == 403 and "teacher's key" in as_attendee.text


def test_the_usage_command_prints_the_table(room):
    with oai(room, "alice") as alice:
        alice.models.list()
    done = phi("keys", "usage", "--endpoint", room.url + "/v1", admin_key=ADMIN_KEY)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("usage since 20") and "room-keys.csv" in lines[0]
    assert lines[1].split()[:3] == ["attendee", "requests", "429s"]
    assert [line.split()[0] for line in lines[2 : 2 + len(NAMES)]] == NAMES
    assert lines[-1].startswith("total")
    assert not find_secrets(done.stdout + done.stderr, TEST_KEYS)
    as_json = phi("keys", "usage", "--endpoint", room.url, "--json", admin_key=ADMIN_KEY)
    assert [row["name"] for row in json.loads(as_json.stdout)["data"]][: len(NAMES)] == NAMES
    nokey = phi("keys", "usage", "--endpoint", room.url)
    assert nokey.returncode == 2 and "PHI_LOCAL_API_KEY" in nokey.stderr
    attendee = phi("keys", "usage", "--endpoint", room.url, admin_key=room.keys["alice"])
    assert attendee.returncode == 2 and "HTTP 403" in attendee.stderr
    assert room.keys["alice"] not in attendee.stderr


def test_the_log_names_attendees_and_holds_no_key(room):
    time.sleep(0.2)
    log = room.log()
    assert "keys file room-keys.csv read: 5 attendee keys, 0 revoked" in log
    assert "/admin/usage" in log  # the access log is on
    assert not find_secrets(log, TEST_KEYS)
