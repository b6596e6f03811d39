"""Every notebook, a second time, on an OpenAI-compatible engine this project did not write.

The lessons promise "change the environment, not the code". This test keeps the promise honest
against llama-cpp-python's own server (`python -m llama_cpp.server`, standing in for vLLM,
Ollama or Foundry Local) on the shipped SmolLM2 GGUF: it starts that server on a free loopback
port, waits until GET /v1/models answers, then runs the whole notebook suite with nbval in a
subprocess whose backend settings are only

    PHI_BACKEND=openai  OPENAI_BASE_URL=http://127.0.0.1:<port>/v1

(plus PHI_TEST_BACKEND=inherit, conftest.py's documented escape hatch that keeps them; no
PHI_MODEL: `connect()` finds the one model the server lists). Where that server lacks something
a lesson shows (GET /info, usage in a stream, the Azure error shape), the lesson prints one
sentence and goes on, so every cell must pass. On failure the message lists each notebook's
result. The server's extras (pydantic-settings, sse-starlette, starlette-context) are pinned
in requirements.txt.
"""

from __future__ import annotations

import importlib.util
import os
import re
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

import httpx
import pytest

from phihelpers.server.engine import default_model_path

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 120  # seconds until GET /v1/models must answer
SUITE_TIMEOUT = 2400  # the whole notebook suite, on a busy 2-core machine
NOTEBOOKS = "notebooks/"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@pytest.fixture(scope="module")
def llama_cpp_server(tmp_path_factory):
    """llama-cpp-python's OpenAI-compatible server on the shipped GGUF; yields (/v1 URL, log)."""
    missing = [
        name
        for name in ("pydantic_settings", "sse_starlette", "starlette_context")
        if importlib.util.find_spec(name) is None
    ]
    assert not missing, (
        f"llama-cpp-python's server needs {', '.join(missing)}: run `make setup` "
        "(they are pinned in requirements.txt)"
    )
    port = _free_port()
    log_path = tmp_path_factory.mktemp("llama-cpp-server") / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PHI_", "OPENAI_"))}
    env["OMP_WAIT_POLICY"] = "PASSIVE"  # llama.cpp's idle threads must not spin on a busy machine
    cmd = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(default_model_path()),
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=ROOT
        )
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(
                    f"llama_cpp.server exited ({process.returncode}):\n{_log_tail(log_path)}"
                )
            try:
                if httpx.get(f"{base_url}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"llama_cpp.server did not answer in {START_TIMEOUT} s:\n{_log_tail(log_path)}"
                )
            time.sleep(0.5)
        yield base_url, log_path
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


def _per_notebook(junit: Path) -> dict[str, dict[str, int]]:
    """{notebook: {"passed": n, "failed": n, "skipped": n}} from nbval's JUnit XML."""
    results: dict[str, dict[str, int]] = defaultdict(
        lambda: {"passed": 0, "failed": 0, "skipped": 0}
    )
    for case in ET.parse(junit).getroot().iter("testcase"):
        found = re.search(r"(\d\d_\w+)\.ipynb", case.get("classname", "") + case.get("file", ""))
        notebook = found.group(1) if found else case.get("classname", "?")
        if case.find("failure") is not None or case.find("error") is not None:
            results[notebook]["failed"] += 1
        elif case.find("skipped") is not None:
            results[notebook]["skipped"] += 1
        else:
            results[notebook]["passed"] += 1
    return dict(sorted(results.items()))


@pytest.mark.slow
@pytest.mark.timeout(SUITE_TIMEOUT + 300)
def test_every_notebook_runs_on_llama_cpp_server(llama_cpp_server, tmp_path):
    base_url, log_path = llama_cpp_server
    env = {k: v for k, v in os.environ.items() if k not in ("PHI_MODEL", "OPENAI_API_KEY")}
    env.update(
        PHI_TEST_BACKEND="inherit",  # conftest.py: keep the two below instead of forcing local
        PHI_BACKEND="openai",
        OPENAI_BASE_URL=base_url,
    )
    junit = tmp_path / "notebooks.xml"
    result = subprocess.run(
        [
            sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env",
            "--nbval-cell-timeout=180", NOTEBOOKS, "-p", "no:cacheprovider", "-q", "--color=no",
            f"--junitxml={junit}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=SUITE_TIMEOUT,
    )  # fmt: skip
    output = result.stdout + result.stderr
    table = _per_notebook(junit) if junit.exists() else {}
    summary = "\n".join(
        f"  {name:<24} {'ok  ' if not r['failed'] else 'FAIL'}  {r['passed']} passed, "
        f"{r['failed']} failed, {r['skipped']} skipped"
        for name, r in table.items()
    )
    print(f"notebooks on llama_cpp.server ({base_url}):\n{summary}")
    returncode = result.returncode
    assert returncode == 0, (
        f"notebooks failed on llama_cpp.server ({base_url}):\n{summary or '(no report)'}"
        f"\n\n{output[-8000:]}"
    )
    assert table, "the inner run reported no notebook cells"
    # The lessons really talked to llama_cpp.server (not to a local server started by mistake).
    assert "POST /v1/chat/completions" in log_path.read_text(errors="replace"), (
        "llama_cpp.server received no chat request: did conftest.py keep PHI_BACKEND=openai?"
    )
