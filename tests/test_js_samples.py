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


# --- Beyond the seed: the official tools and embeddings samples (lessons 12 and 14) ----------

# github/codespaces-models' samples/js/azure_ai_inference/{tools,embeddings}.js, with the same
# house changes as the seed's three (key, endpoint, allowInsecureConnection), each marked
# "// Changed:" in the file.
OFFICIAL_SAMPLES = ("tools.js", "embeddings.js")
HOUSE_LINES = (
    'const token = process.env["PHI_API_KEY"] ?? "no-key-needed";',
    'const endpoint = process.env["PHI_ENDPOINT"] ?? "http://127.0.0.1:8765";',
    OPTIONS_LINE,
    "  const client = new ModelClient(endpoint, new AzureKeyCredential(token), options);",
)


@pytest.mark.parametrize("name", OFFICIAL_SAMPLES)
def test_official_sample_has_the_house_changes_and_no_retired_service(name):
    sample = (JS_DIR / name).read_text(encoding="utf-8")
    lines = _lines(sample)
    for line in HOUSE_LINES:
        assert line in lines, line
    for retired in ("GITHUB_TOKEN", "models.inference.ai.azure.com", "models.github.ai"):
        assert retired not in sample
    assert 'from "@azure-rest/ai-inference"' in sample
    assert sample.rstrip().endswith(
        'main().catch((err) => {\n  console.error("The sample encountered an error:", err);\n});'
    )


def _json_after(line: str, marker: str):
    import json

    return json.loads(line.split(marker, 1)[1])


@needs_node
def test_tools_sample_runs_the_round_trip_against_the_local_server(settings):
    """The model may answer in text (tool_choice "auto"); when it calls, the call is well formed
    (the local server's grammar) and the sample sends the result back and prints what came."""
    done = run_sample("tools.js", settings.endpoint, settings.credential_key)
    assert done.returncode == 0, done.stderr[-3000:]
    assert ERROR_MARK not in done.stderr, done.stderr[-3000:]
    out = done.stdout.splitlines()
    calls = [
        line for line in out if line.startswith("Calling function `getFlightInfo` with arguments ")
    ]
    if not calls:
        assert any(line.startswith("The model answered without calling a tool") for line in out), (
            out
        )
        return
    for line in calls:
        args = _json_after(line, " with arguments ")
        assert set(args) == {"originCity", "destinationCity"}
        assert all(isinstance(v, str) for v in args.values())
    returned = [
        _json_after(line, "Function returned = ")
        for line in out
        if line.startswith("Function returned = ")
    ]
    assert len(returned) == len(calls)
    assert all(r.get("error") or r.get("flight_number") == "DL123" for r in returned)
    assert any(
        line.startswith(("Model response = ", "The model asked for the tool again")) for line in out
    ), out


@needs_node
def test_embeddings_sample_prints_three_vectors_and_the_model(settings):
    done = run_sample("embeddings.js", settings.endpoint, settings.credential_key)
    assert done.returncode == 0, done.stderr[-3000:]
    assert ERROR_MARK not in done.stderr, done.stderr[-3000:]
    out = done.stdout
    items = re.findall(r"^data\[(\d)\]: length=(\d+), \[", out, re.M)
    indexes = [int(index) for index, _ in items]
    lengths = [int(length) for _, length in items]
    assert indexes == [0, 1, 2], out
    assert len(set(lengths)) == 1 and lengths[0] > 0, out
    assert re.search(r"prompt_tokens: [1-9]\d*", out), out
    model = re.search(r"^model: (.+)$", out, re.M)
    assert model and model.group(1).strip() not in ("", "undefined"), out


@needs_node
def test_embeddings_sample_reports_a_server_without_embeddings(tmp_path):
    """Against a server that answers /embeddings with an error, the sample prints the seed's
    error sentence (isUnexpected), never a vector."""
    import http.server
    import json
    import threading

    class NoEmbeddings(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's naming)
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body = json.dumps(
                {"error": {"code": "not_found", "message": "No route POST /embeddings"}}
            )
            self.send_response(404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NoEmbeddings)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        done = run_sample(
            "embeddings.js",
            f"http://127.0.0.1:{server.server_address[1]}",
            "placeholder",
            timeout=120,
        )
    finally:
        server.shutdown()
        server.server_close()
    assert ERROR_MARK in done.stderr
    assert "No route POST /embeddings" in done.stderr
    assert "data[" not in done.stdout
