"""phihelpers.state: the state file a server writes and its clients read."""

from __future__ import annotations

import json
import os

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
