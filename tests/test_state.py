"""phihelpers.state: the state file a server writes and its clients read."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat

import pytest

from phihelpers import state


def test_written_state_is_read_back_and_nothing_else_is_left(tmp_path):
    state.write_state(tmp_path, {"pid": 1, "host": "127.0.0.1", "port": 8765, "model": "m"})
    assert state.read_state(tmp_path)["model"] == "m"
    assert sorted(p.name for p in tmp_path.iterdir()) == [state.STATE_FILE]  # no temp file


@pytest.mark.parametrize(
    "content",
    ["", "{", "[]", '{"pid": "1", "host": "h", "port": 1}', '{"pid": 1, "port": 1}', "null"],
)
def test_a_state_that_is_not_a_server_state_reads_as_none(tmp_path, content):
    state.state_file(tmp_path).write_text(content)
    assert state.read_state(tmp_path) is None


def test_no_state_dir_reads_as_none(tmp_path):
    assert state.read_state(tmp_path / "missing") is None


def test_remove_with_a_pid_removes_only_that_servers_state(tmp_path):
    state.write_state(tmp_path, {"pid": 42, "host": "127.0.0.1", "port": 1})
    state.remove_state(tmp_path, pid=os.getpid())
    assert json.loads(state.state_file(tmp_path).read_text())["pid"] == 42
    state.remove_state(tmp_path, pid=42)
    assert not state.state_file(tmp_path).exists()
    state.remove_state(tmp_path)  # nothing there: no error


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:5"),
        ("0.0.0.0", "http://127.0.0.1:5"),
        ("::", "http://127.0.0.1:5"),
        ("::1", "http://[::1]:5"),
    ],
)
def test_url_of(host, url):
    assert state.url_of({"host": host, "port": 5}) == url


# -- a state directory private to its user, a state file only its server can answer to ------

OTHER_UID = 54321  # a uid no test runs as


def one_sentence(text: str) -> bool:
    text = text.strip()
    return "\n" not in text and text.endswith(".") and ". " not in text


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def chown_to_another_user(path) -> None:
    """Tests run as root (which passes every access check: the refusal must come from the
    owner and mode bits); elsewhere chown is not allowed, and the test is skipped."""
    try:
        os.chown(path, OTHER_UID, -1)
    except PermissionError:
        pytest.skip("chown needs root")


def test_the_state_directory_is_created_0700_and_the_state_file_0600(tmp_path):
    state_dir = tmp_path / "cache" / "phihelpers"
    state.write_state(state_dir, {"pid": 1, "host": "127.0.0.1", "port": 1, "secret": "s" * 64})
    assert mode(state_dir) == 0o700
    assert mode(state.state_file(state_dir)) == 0o600


def test_an_existing_state_directory_of_ours_is_tightened_to_0700(tmp_path):
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o755)
    state_dir.chmod(0o755)  # what earlier versions (and mkdir under umask 022) left
    state.write_state(state_dir, {"pid": 1, "host": "127.0.0.1", "port": 1})
    assert mode(state_dir) == 0o700


@pytest.mark.parametrize("bits", [0o777, 0o770, 0o702])
def test_a_state_directory_other_users_can_write_is_refused_in_one_sentence(tmp_path, bits):
    state.write_state(tmp_path, {"pid": 1, "host": "127.0.0.1", "port": 1})
    tmp_path.chmod(bits)  # anyone could have planted that file
    with pytest.raises(state.LocalServerError) as err:
        state.read_state(tmp_path)
    message = str(err.value)
    assert one_sentence(message) and str(tmp_path) in message and f"{bits:04o}" in message
    assert "PHI_STATE_DIR" in message
    with pytest.raises(state.LocalServerError):
        state.write_state(tmp_path, {"pid": 2, "host": "127.0.0.1", "port": 2})
    assert mode(tmp_path) == bits  # refused, not silently "fixed"
    assert json.loads(state.state_file(tmp_path).read_text())["pid"] == 1


def test_a_state_directory_owned_by_another_user_is_refused_in_one_sentence(tmp_path):
    state_dir = tmp_path / "state"
    state.write_state(state_dir, {"pid": 1, "host": "127.0.0.1", "port": 1})
    chown_to_another_user(state_dir)
    with pytest.raises(state.LocalServerError) as err:
        state.read_state(state_dir)
    assert one_sentence(str(err.value)) and f"uid {OTHER_UID}" in str(err.value)


@pytest.mark.parametrize("how", ["group-writable", "world-writable", "another user's"])
def test_a_state_file_that_is_not_ours_alone_is_refused_in_one_sentence(tmp_path, how):
    state.write_state(tmp_path, {"pid": 1, "host": "127.0.0.1", "port": 1})
    path = state.state_file(tmp_path)
    if how == "another user's":
        chown_to_another_user(path)
    else:
        path.chmod(0o620 if how == "group-writable" else 0o602)
    with pytest.raises(state.LocalServerError) as err:
        state.read_state(tmp_path)
    assert one_sentence(str(err.value)) and str(path) in str(err.value)


def test_a_state_file_that_is_a_directory_is_one_sentence_and_leaves_nothing(tmp_path):
    state.state_file(tmp_path).mkdir()
    for call in (
        lambda: state.write_state(tmp_path, {"pid": 1, "host": "127.0.0.1", "port": 1}),
        lambda: state.read_state(tmp_path),
    ):
        with pytest.raises(state.LocalServerError) as err:
            call()
        assert one_sentence(str(err.value)) and "is a directory" in str(err.value)
    assert [p.name for p in tmp_path.iterdir()] == [state.STATE_FILE]  # no temporary file


def test_a_state_directory_that_cannot_be_created_is_one_sentence(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(state.LocalServerError) as err:
        state.write_state(blocker / "state", {"pid": 1, "host": "127.0.0.1", "port": 1})
    message = str(err.value)
    assert one_sentence(message) and "PHI_STATE_DIR" in message and str(blocker) in message
    assert [p.name for p in tmp_path.iterdir()] == ["a-file"]
    assert blocker.read_text() == "not a directory"


def test_the_challenge_is_an_hmac_of_the_nonce_and_the_secret_never_shows(tmp_path):
    secret = "0123456789abcdef" * 4
    state.write_state(tmp_path, {"pid": 1, "host": "127.0.0.1", "port": 1, "secret": secret})
    read = state.read_state(tmp_path)
    assert read["secret"] == secret and secret not in repr(read)  # a notebook shows the repr
    nonce = "n" * 32
    proof = hmac.new(secret.encode(), nonce.encode(), hashlib.sha256).hexdigest()
    assert state.answers_challenge(read, nonce, proof)
    assert not state.answers_challenge(read, nonce, proof[:-1] + "0")
    assert not state.answers_challenge(read, nonce, secret)  # the secret itself is no answer
    assert not state.answers_challenge({"pid": 1}, nonce, proof)  # no secret: no proof
