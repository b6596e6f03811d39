"""In IPython and Jupyter, phihelpers' ConfigError family shows as its paragraph, no traceback.

Checked with a real IPython InteractiveShell (in a subprocess, so this test process keeps no
shell) and with a real Jupyter kernel (ipykernel through jupyter_client), which is what a
notebook and nbval talk to. The cell must still fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from phihelpers.config import GITHUB_RETIRED_MESSAGE

SHELL_SCRIPT = textwrap.dedent(
    """
    import json
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    results = {}
    for name, code in [
        ("import", "import phihelpers"),
        ("connect", "from phihelpers import connect\\nsettings = connect()"),
        ("again", "import importlib, phihelpers; importlib.reload(phihelpers); phihelpers.connect()"),
        ("other", "1 / 0"),
    ]:
        print(f"=== {name}", flush=True)
        r = shell.run_cell(code)
        results[name] = [r.success, type(r.error_in_exec).__name__]
    print("=== results", json.dumps(results), flush=True)
    """
)


def hermetic_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PHI_", "AZURE_", "OPENAI_")) and k != "GITHUB_TOKEN"
    }
    return {**env, "PHI_STATE_DIR": os.environ.get("PHI_STATE_DIR", ""), **extra}


def sections(output: str) -> dict[str, str]:
    parts: dict[str, str] = {}
    name = None
    for line in output.splitlines():
        if line.startswith("=== "):
            name, _, rest = line[4:].partition(" ")
            parts[name] = rest
        elif name:
            parts[name] += line + "\n"
    return parts


def test_interactive_shell_shows_only_the_paragraph_and_the_cell_fails(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", SHELL_SCRIPT],
        env=hermetic_env(PHI_BACKEND="github"),
        cwd=tmp_path,  # no .env here
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    out = sections(done.stdout)
    results = json.loads(out["results"])
    assert results["import"] == [True, "NoneType"]
    assert results["connect"] == [False, "BackendRetiredError"]  # the cell still fails
    assert results["again"] == [False, "BackendRetiredError"]  # a reload keeps one handler
    for name in ("connect", "again"):
        shown = out[name].strip()
        assert shown == GITHUB_RETIRED_MESSAGE  # the paragraph, and nothing else
        assert "Traceback" not in shown and "File " not in shown
    # Other errors keep their ordinary traceback.
    assert "ZeroDivisionError" in out["other"] and "Traceback" in out["other"]
    assert results["other"] == [False, "ZeroDivisionError"]


def test_a_shell_with_its_own_handler_is_left_alone(tmp_path):
    script = textwrap.dedent(
        """
        from IPython.core.interactiveshell import InteractiveShell
        shell = InteractiveShell.instance()
        shell.set_custom_exc((KeyError,), lambda *a, **k: ["mine"])
        shell.run_cell("import phihelpers")
        print("HANDLED", shell.custom_exceptions)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=hermetic_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "HANDLED (<class 'KeyError'>,)" in done.stdout


@pytest.mark.slow
def test_a_jupyter_kernel_sends_the_paragraph_as_the_error_output(tmp_path):
    from jupyter_client.manager import start_new_kernel

    env = hermetic_env(
        PHI_BACKEND="azure", AZURE_AI_ENDPOINT="https://contoso.services.ai.azure.com/models"
    )
    km, kc = start_new_kernel(kernel_name="python3", env=env, cwd=str(tmp_path))
    try:
        msg_id = kc.execute("from phihelpers import connect\nsettings = connect()")
        errors, streams = [], []
        while True:
            msg = kc.get_iopub_msg(timeout=60)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind = msg["header"]["msg_type"]
            if kind == "error":
                errors.append(msg["content"])
            elif kind == "stream":
                streams.append(msg["content"]["text"])
            elif kind == "status" and msg["content"]["execution_state"] == "idle":
                break
        reply = kc.get_shell_msg(timeout=60)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    assert reply["content"]["status"] == "error"  # the cell failed: Run All and nbval stop
    (error,) = errors
    assert error["ename"] == "BackendRetiredError"
    (paragraph,) = error["traceback"]  # the whole "traceback" is the paragraph
    assert paragraph.startswith(
        "AZURE_AI_ENDPOINT=https://contoso.services.ai.azure.com/models is the Azure AI Model "
        "Inference API"
    )
    assert "AZURE_OPENAI_ENDPOINT=https://contoso.openai.azure.com/openai/v1/" in paragraph
    assert "2026-08-26" in paragraph and "\n" not in paragraph
    assert "Traceback" not in "".join(streams) + paragraph
