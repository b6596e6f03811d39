"""The quick start's three JavaScript samples (samples/js/) run with node against the local server.

The samples are the seed page's code with only the key, the endpoint and the
`allowInsecureConnection` option changed (checked line by line below), run with the real
@azure-rest/ai-inference client that `make setup` installs with `npm ci`. Model text is not
reproducible, so the runs assert structure: exit code, output present, no error message.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from seed_page import code_blocks

ROOT = Path(__file__).resolve().parent.parent
JS_DIR = ROOT / "samples" / "js"
SAMPLES = ("basic.js", "multi_turn.js", "streaming.js")
ERROR_MARK = "The sample encountered an error"

NODE = shutil.which("node")
needs_node = pytest.mark.skipif(
    NODE is None, reason="Node.js (node) is not installed: the JavaScript samples cannot run"
)

# The seed's lines that the samples change, and what they became.
REPLACED = {
    'const token = process.env["GITHUB_TOKEN"];':
        'const token = process.env["PHI_API_KEY"] ?? "no-key-needed";',
    'const endpoint = "https://models.inference.ai.azure.com";':
        'const endpoint = process.env["PHI_ENDPOINT"] ?? "http://127.0.0.1:8765";',
    "  const client = new ModelClient(endpoint, new AzureKeyCredential(token));":
        "  const client = new ModelClient(endpoint, new AzureKeyCredential(token), options);",
}  # fmt: skip
OPTIONS_LINE = (
    'const options = endpoint.startsWith("http://") ? { allowInsecureConnection: true } : {};'
)


def seed_js_blocks() -> dict[str, str]:
    """The seed page's JavaScript samples by file name (its code fences have no language tag)."""
    js = code_blocks('import ModelClient from "@azure-rest/ai-inference"')
    kinds = {}
    for code in js:
        if "createSseStream" in code:
            kinds["streaming.js"] = code
        elif 'role: "assistant"' in code:
            kinds["multi_turn.js"] = code
        else:
            kinds["basic.js"] = code
    return kinds


def _lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.strip().splitlines()]


@pytest.mark.parametrize("name", SAMPLES)
def test_sample_is_the_seed_with_only_key_endpoint_and_option_changed(name):
    seed = seed_js_blocks()[name]
    expected = [REPLACED.get(line, line) for line in _lines(seed)]
    assert expected != _lines(seed)
    sample = (JS_DIR / name).read_text(encoding="utf-8")
    assert OPTIONS_LINE in sample
    kept = [
        line
        for line in _lines(sample)
        if not line.startswith("// Changed:") and line != OPTIONS_LINE
    ]
    assert kept == expected


def test_package_json_pins_exact_versions_and_is_a_module():
    import json

    package = json.loads((JS_DIR / "package.json").read_text())
    assert package["type"] == "module"
    deps = package["dependencies"]
    assert set(deps) == {"@azure-rest/ai-inference", "@azure/core-auth", "@azure/core-sse"}
    for version in deps.values():
        assert re.fullmatch(r"\d+\.\d+\.\d+(-[\w.]+)?", version), version
    lock = json.loads((JS_DIR / "package-lock.json").read_text())
    for dep, version in deps.items():
        assert lock["packages"][f"node_modules/{dep}"]["version"] == version


def run_sample(
    name: str, endpoint: str, key: str, timeout: float = 600
) -> subprocess.CompletedProcess:
    if not (JS_DIR / "node_modules" / "@azure-rest" / "ai-inference").is_dir():
        pytest.fail(
            "samples/js/node_modules is missing: run `make setup` (it runs `npm ci` in "
            "samples/js when Node.js is installed)."
        )
    env = {**os.environ, "PHI_ENDPOINT": endpoint, "PHI_API_KEY": key}
    return subprocess.run(
        [NODE, name], cwd=JS_DIR, env=env, capture_output=True, text=True, timeout=timeout
    )


@needs_node
@pytest.mark.parametrize("name", SAMPLES)
def test_sample_runs_against_the_local_server(name, settings):
    done = run_sample(name, settings.endpoint, settings.credential_key)
    assert done.returncode == 0, done.stderr[-3000:]
    assert ERROR_MARK not in done.stderr, done.stderr[-3000:]
    assert done.stdout.strip(), f"{name} printed no answer"
    if name == "basic.js":  # console.log of the first choice: one non-empty line at least
        assert any(line.strip() for line in done.stdout.splitlines())


@needs_node
def test_sample_reports_an_unreachable_server_with_its_own_message():
    """The seed's catch() prints a sentence (exit code stays 0): the check above can fail."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before node connects: nothing listens there
    done = run_sample("basic.js", f"http://127.0.0.1:{port}", "placeholder", timeout=120)
    assert ERROR_MARK in done.stderr
    assert not done.stdout.strip()
