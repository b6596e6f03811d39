"""`pull`: the real download code against a real HTTP server on 127.0.0.1 (tests/local_hub.py).

The file served is the GGUF the project ships (SmolLM2-135M-Instruct, ~94 MB), standing in
for a Phi GGUF, which these machines cannot download. At the end the pulled file is served by
a real local model server, and a request that names it gets its answer.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from local_hub import LocalHub, sha256_of
from tqdm import tqdm

from phihelpers.catalog import get
from phihelpers.launcher import LocalServerError, spawn, wait_until_ready
from phihelpers.pull import PullError, pull
from phihelpers.server.engine import default_model_path
from phihelpers.state import url_of

SHIPPED = default_model_path()
SIZE = SHIPPED.stat().st_size


@pytest.fixture(scope="module")
def shipped_sha() -> str:
    return sha256_of(SHIPPED)


@pytest.fixture
def entry(shipped_sha):
    """A catalog entry like phi-4-mini's (and pinned to its commit), pointing at the shipped
    file, with its real SHA-256."""
    return dataclasses.replace(
        get("phi-4-mini"),
        name="tiny-pulled",
        model="Tiny-Pulled-Model",
        aliases=(),
        gguf_repo="local/tiny-GGUF",
        gguf_file=SHIPPED.name,
        gguf_quant="Q4_1",
        gguf_size_bytes=SIZE,
        sha256=shipped_sha,
        sha256_source="computed by the test from the shipped file",
    )


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_pull_downloads_verifies_and_shows_progress(tmp_path, entry, capsys):
    models = tmp_path / "models"
    with LocalHub(SHIPPED) as hub:
        result = pull(entry, models, hub.endpoint, progress=True)
    assert result.path == models / "Tiny-Pulled-Model-Q4_1.gguf"
    assert result.size == SIZE and result.fetched_bytes == SIZE and result.resumed_from == 0
    assert sha256_of(result.path) == entry.sha256 == result.sha256
    assert "Tiny-Pulled-Model-Q4_1.gguf" in files_in(models)
    assert not [n for n in files_in(models) if n.endswith(".part")]
    # the progress bar ran to its total, and the total was the file's size
    err = capsys.readouterr().err
    total = tqdm.format_sizeof(SIZE, divisor=1024)
    assert "tiny-pulled" in err and "100%" in err and f"{total}/{total}" in err
    # the hub's HEAD (with the announced checksum) came before the one GET, which had no Range
    assert [r[0] for r in hub.requests][:1] == ["HEAD"]
    assert hub.gets() == [("GET", f"/cdn/{SHIPPED.name}", None)]


def test_pull_asks_for_the_pinned_commit_not_main(tmp_path, entry):
    with LocalHub(SHIPPED) as hub:
        pull(entry, tmp_path, hub.endpoint, progress=False)
    pinned = f"/local/tiny-GGUF/resolve/{entry.gguf_revision}/{SHIPPED.name}"
    assert hub.requests[0][:2] == ("HEAD", pinned)
    assert all("/resolve/main/" not in path for _, path, _ in hub.requests)


@pytest.mark.parametrize("revision", ["main", "", "v1.0", "78eb92a"])
def test_an_entry_not_pinned_to_a_commit_is_refused_before_any_request(tmp_path, entry, revision):
    unpinned = dataclasses.replace(entry, gguf_revision=revision)
    with LocalHub(SHIPPED) as hub:
        with pytest.raises(PullError, match="not pinned to a repository commit"):
            pull(unpinned, tmp_path / "models", hub.endpoint, progress=False)
        assert hub.requests == []
    assert not (tmp_path / "models").exists()


def test_second_pull_does_not_fetch_again(tmp_path, entry):
    models = tmp_path / "models"
    with LocalHub(SHIPPED) as hub:
        pull(entry, models, hub.endpoint, progress=False)
        hub.requests.clear()
        again = pull(entry, models, hub.endpoint, progress=False)
    assert again.already_present and again.fetched_bytes == 0
    assert hub.requests == []  # not even a HEAD: works offline too


def test_broken_download_resumes_with_range(tmp_path, entry):
    models = tmp_path / "models"
    cut = 30 * 1024 * 1024
    with LocalHub(SHIPPED, cut_after=cut) as hub:
        with pytest.raises(PullError, match="broke off|stopped at") as info:
            pull(entry, models, hub.endpoint, progress=False)
        assert "run the same command again to resume" in str(info.value)
        part = models / "Tiny-Pulled-Model-Q4_1.gguf.part"
        assert part.stat().st_size == cut
        assert not (models / "Tiny-Pulled-Model-Q4_1.gguf").exists()  # never a half file

        result = pull(entry, models, hub.endpoint, progress=False)
    assert result.resumed_from == cut and result.fetched_bytes == SIZE - cut
    assert hub.gets()[-1] == ("GET", f"/cdn/{SHIPPED.name}", f"bytes={cut}-")
    assert sha256_of(result.path) == entry.sha256
    assert not part.exists()


def test_wrong_checksum_deletes_the_part_and_says_so(tmp_path, entry):
    models = tmp_path / "models"
    with LocalHub(SHIPPED, corrupt=True, etag=None) as hub:
        with pytest.raises(PullError, match="checksum mismatch") as info:
            pull(entry, models, hub.endpoint, progress=False)
    assert "partial file was deleted" in str(info.value)
    assert [n for n in files_in(models) if not n.startswith(".")] == []


def test_source_announcing_another_checksum_is_refused_before_downloading(tmp_path, entry):
    models = tmp_path / "models"
    with LocalHub(SHIPPED, etag="0" * 64) as hub:
        with pytest.raises(PullError, match="changed since the catalog was written"):
            pull(entry, models, hub.endpoint, progress=False)
        assert hub.gets() == []
    assert files_in(models) == []


def test_without_catalog_checksum_the_hubs_announced_one_is_used(tmp_path, entry):
    unpinned = dataclasses.replace(entry, sha256="", sha256_source="")
    with LocalHub(SHIPPED) as hub:
        result = pull(unpinned, tmp_path, hub.endpoint, progress=False)
    assert result.sha256 == entry.sha256 and "X-Linked-Etag" in result.sha256_source
    with LocalHub(SHIPPED, etag=None) as hub:
        with pytest.raises(PullError, match="no SHA-256 is known"):
            pull(unpinned, tmp_path / "other", hub.endpoint, progress=False)
        assert hub.gets() == []


def test_offline_is_a_clear_refusal(tmp_path, entry):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(PullError, match="cannot reach 127.0.0.1.*you appear to be offline"):
        pull(entry, tmp_path / "models", f"http://127.0.0.1:{port}", progress=False)
    assert not (tmp_path / "models").exists()


def test_too_little_disk_space_refuses_before_writing(tmp_path, entry):
    models = tmp_path / "models"
    with LocalHub(SHIPPED) as hub:
        with pytest.raises(PullError, match="not enough disk space") as info:
            pull(entry, models, hub.endpoint, progress=False, free_space=lambda _p: 50_000_000)
        assert hub.gets() == []
    assert "PHI_MODELS_DIR" in str(info.value)
    assert not models.exists()


def test_a_catalog_model_without_gguf_is_refused():
    with pytest.raises(PullError, match="Phi-3-small-8k-instruct has no GGUF"):
        pull("phi-3-small-8k", "/nonexistent", "http://127.0.0.1:9", progress=False)


def test_cli_pull_reports_offline(tmp_path):
    env = {**os.environ, "PHI_MODELS_DIR": str(tmp_path), "PHI_HF_ENDPOINT": "http://127.0.0.1:9"}
    r = subprocess.run(
        [sys.executable, "-m", "phihelpers", "pull", "phi-4-mini", "--quiet"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1
    assert "you appear to be offline" in r.stderr and "Traceback" not in r.stderr


# -- the pulled file, served -------------------------------------------------------------------


def _start_server(state_dir: Path, models_dir: Path, **extra_env) -> tuple[subprocess.Popen, str]:
    """The launcher's spawn() and wait; ("", proc) when the server exits during start-up."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHI_")}
    env.update(PHI_MODELS_DIR=str(models_dir), PHI_STATE_DIR=str(state_dir), **extra_env)
    proc = spawn(state_dir, ["--port", "0"], env=env)
    try:
        state = wait_until_ready(proc, state_dir, timeout=90)
    except LocalServerError:
        if proc.poll() is None:
            proc.kill()
            raise AssertionError("server did not start") from None
        return proc, ""
    return proc, url_of(state)


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.mark.slow
def test_pulled_model_is_served_when_a_request_names_it(tmp_path, entry):
    from azure.ai.inference import ChatCompletionsClient
    from azure.ai.inference.models import UserMessage
    from azure.core.credentials import AzureKeyCredential
    from azure.core.exceptions import HttpResponseError

    models = tmp_path / "models"
    with LocalHub(SHIPPED) as hub:
        pull(entry, models, hub.endpoint, progress=False)
    proc, endpoint = _start_server(tmp_path / "state", models)
    try:
        assert endpoint, (tmp_path / "state" / "server.log").read_text()
        client = ChatCompletionsClient(endpoint=endpoint, credential=AzureKeyCredential("x"))
        ask = [UserMessage(content="Say hello.")]

        r = client.complete(messages=ask, model="tiny-pulled-model", max_tokens=8)
        assert r.model == "Tiny-Pulled-Model"
        assert r.usage.completion_tokens > 0 and r.choices[0].finish_reason in ("stop", "length")
        info = client.get_model_info()  # /info: the default, what is here, what is loaded
        assert info.model_name == "SmolLM2-135M-Instruct"
        assert "Tiny-Pulled-Model" in info["models_available"]
        assert info["model_loaded"] == "Tiny-Pulled-Model"

        # the seed's name has no GGUF anywhere: the default answers, and says so
        r = client.complete(messages=ask, model="Phi-3-small-8k-instruct", max_tokens=8)
        assert r.model == "SmolLM2-135M-Instruct"

        # a Phi from the catalog that is not pulled here: a clear 404
        with pytest.raises(HttpResponseError) as err:
            client.complete(messages=ask, model="phi-4-mini", max_tokens=8)
        assert err.value.status_code == 404
        assert "python -m phihelpers pull phi-4-mini" in str(err.value)
        client.close()
    finally:
        _stop(proc)


@pytest.mark.slow
def test_phi_model_setting_picks_the_pulled_model_or_explains(tmp_path, entry):
    import httpx

    models = tmp_path / "models"
    with LocalHub(SHIPPED) as hub:
        pull(entry, models, hub.endpoint, progress=False)
    proc, endpoint = _start_server(tmp_path / "s1", models, PHI_MODEL="Tiny-Pulled-Model")
    try:
        assert endpoint, (tmp_path / "s1" / "server.log").read_text()
        assert httpx.get(endpoint + "/info").json()["model_name"] == "Tiny-Pulled-Model"
    finally:
        _stop(proc)

    proc, endpoint = _start_server(tmp_path / "s2", models, PHI_MODEL="phi-4-mini")
    proc.wait(timeout=60)
    out = (tmp_path / "s2" / "server.log").read_text()
    assert endpoint == "" and proc.returncode == 2
    assert "python -m phihelpers pull phi-4-mini" in out and "Traceback" not in out
