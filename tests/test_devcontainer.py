"""The dev container (.devcontainer/), checked without Docker.

It must be what Codespaces, VS Code and CI read (the Dev Container CLI parses it), run the
README's set-up command and nothing else, forward the right ports, offer keys as secrets only,
and prebuild llama-cpp-python where `make setup` will find it.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import json5
import pytest
from readme import readme_commands

ROOT = Path(__file__).resolve().parent.parent
DEVCONTAINER = ROOT / ".devcontainer"
CONFIG = DEVCONTAINER / "devcontainer.json"
DOCKERFILE = DEVCONTAINER / "Dockerfile"
CLI = ROOT / ".tools" / "node_modules" / ".bin" / "devcontainer"
SECRETS = {
    "AZURE_AI_ENDPOINT",
    "AZURE_AI_API_KEY",
    "OPENAI_BASE_URL",
    "OPENAI_API_KEY",
    "PHI_BACKEND",
}


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, args = line.partition(" ")
            pairs.append((instruction.upper(), " ".join(args.split())))
    return pairs


@pytest.fixture(scope="module")
def config() -> dict:
    return json5.loads(CONFIG.read_text(encoding="utf-8"))


def test_devcontainer_json_is_jsonc(config):
    # JSON with comments: plain JSON must refuse it (it has comments), a JSONC reader must not.
    with pytest.raises(json.JSONDecodeError):
        json.loads(CONFIG.read_text(encoding="utf-8"))
    assert config["name"]


def test_post_create_command_is_the_readme_setup_command(config):
    assert config["postCreateCommand"] == "make setup"
    assert "make setup" in readme_commands(), "README.md must show `make setup` in a code block"


def test_readme_commands_are_make_targets():
    for target in ("setup", "lab", "test"):
        assert f"make {target}" in readme_commands()
        dry_run = subprocess.run(
            ["make", "-n", "-C", str(ROOT), target], capture_output=True, text=True
        )
        assert dry_run.returncode == 0, dry_run.stderr


def test_image_is_python_311_on_bookworm_with_compiler_and_cmake():
    instructions = dockerfile_instructions()
    bases = [args for name, args in instructions if name == "FROM"]
    assert bases == ["mcr.microsoft.com/devcontainers/python:1-3.11-bookworm"]
    runs = " ".join(args for name, args in instructions if name == "RUN")
    assert re.search(r"apt-get install .*\bbuild-essential\b.*\bcmake\b", runs)


def test_node_20_for_the_javascript_lesson(config):
    assert config["features"]["ghcr.io/devcontainers/features/node:1"] == {"version": "20"}


def test_vscode_extensions_for_python_and_jupyter(config):
    extensions = config["customizations"]["vscode"]["extensions"]
    assert {"ms-python.python", "ms-toolsai.jupyter"} <= set(extensions)


def test_forwarded_ports_are_jupyterlab_and_the_local_model_server(config):
    from jupyter_server.serverapp import DEFAULT_JUPYTER_SERVER_PORT

    from phihelpers.config import DEFAULT_LOCAL_PORT

    # The ports `make lab` (JupyterLab) and the local model server really use by default.
    assert config["forwardPorts"] == [DEFAULT_JUPYTER_SERVER_PORT, DEFAULT_LOCAL_PORT]
    for port in config["forwardPorts"]:
        assert config["portsAttributes"][str(port)]["label"]


def test_host_requirements_fit_a_two_core_codespace(config):
    assert config["hostRequirements"] == {"cpus": 2, "memory": "8gb"}


def test_keys_are_offered_as_codespaces_secrets_and_never_baked_in(config):
    import phihelpers.config

    assert set(config["secrets"]) == SECRETS
    settings_source = inspect.getsource(phihelpers.config)
    for name, secret in config["secrets"].items():
        assert secret["description"].strip(), name
        assert name in settings_source, f"{name} is offered but phihelpers.config never reads it"
    baked = {
        **config.get("containerEnv", {}),
        **config.get("remoteEnv", {}),
        **config["build"].get("args", {}),
    }
    assert not SECRETS & set(baked)
    assert not any(name in DOCKERFILE.read_text(encoding="utf-8") for name in SECRETS)


def test_image_prebuilds_the_wheel_where_make_setup_looks():
    instructions = dockerfile_instructions()
    env = dict(args.split("=", 1) for name, args in instructions if name == "ENV")
    runs = [args for name, args in instructions if name == "RUN"]
    assert env["PHI_WHEEL_CACHE"] == "/opt/phihelpers/wheels"
    assert any("scripts/setup.sh --wheel-only" in run for run in runs)
    assert "PHI_WHEEL_CACHE" in (ROOT / "scripts" / "setup.sh").read_text(encoding="utf-8")


def test_build_context_holds_exactly_what_the_dockerfile_copies(config):
    assert config["build"] == {"dockerfile": "Dockerfile", "context": ".."}
    sources = []
    for name, args in dockerfile_instructions():
        if name == "COPY":
            sources += args.split()[:-1]
    allowed = [
        line[1:]
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    assert sorted(sources) == sorted(allowed) == ["requirements.txt", "scripts/setup.sh"]
    assert all((ROOT / source).is_file() for source in sources)


def test_wheel_only_builds_from_the_copied_files_and_installs_nothing(tmp_path):
    """Run the Dockerfile's wheel step as the image build would: only the two COPYed files."""
    build = tmp_path / "phi-build"
    (build / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "requirements.txt", build)
    shutil.copy(ROOT / "scripts" / "setup.sh", build / "scripts")
    wheels = tmp_path / "wheels"
    env = {
        **os.environ,
        "PHI_WHEEL_CACHE": str(wheels),
        "VENV": sys.prefix,  # this test's own environment: a new venv takes too long for a test
        "PYTHON": sys.executable,
        # No index: a cold cache makes pip fail at once instead of compiling for minutes.
        "PIP_NO_INDEX": "1",
        "PIP_CONFIG_FILE": os.devnull,
    }
    env.pop("PHI_LLAMA_CMAKE_ARGS", None)
    step = ["bash", str(build / "scripts" / "setup.sh"), "--wheel-only"]

    requirements = (ROOT / "requirements.txt").read_text(encoding="utf-8")
    version = re.search(r"^llama-cpp-python==(\S+)", requirements, re.M)[1]

    cold = subprocess.run(step, env=env, capture_output=True, text=True, timeout=300)
    assert cold.returncode != 0
    assert "building llama-cpp-python" in cold.stdout
    assert f"llama-cpp-python=={version}" in cold.stderr  # pip was asked for it, and had no index
    (key_dir,) = wheels.iterdir()  # setup.sh's cache folder for this version and these flags

    (key_dir / f"llama_cpp_python-{version}-py3-none-linux_x86_64.whl").touch()
    warm = subprocess.run(step, env=env, capture_output=True, text=True, timeout=300)
    assert warm.returncode == 0, warm.stdout + warm.stderr
    assert f"wheel ready in {key_dir}" in warm.stdout
    assert "building" not in warm.stdout
    assert "installing requirements" not in warm.stdout


def test_dockerfile_passes_hadolint():
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run([str(hadolint), str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _docker_path(tmp_path: Path) -> str:
    """The real docker if a daemon answers; otherwise a stand-in for the one question.

    `read-configuration` asks the container engine whether a container for this folder already
    exists (`docker ps`). Without a daemon (this machine, or inside the dev container itself) the
    stand-in answers "none", as on a first start, and fails any other call, so the test would
    notice if the CLI started to need Docker for more.
    """
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "ps", "-q"], capture_output=True, timeout=30).returncode == 0
    ):
        return docker
    stand_in = tmp_path / "docker"
    stand_in.write_text(
        '#!/bin/sh\n[ "$1" = ps ] && exit 0\necho "unexpected docker call: $*" >&2\nexit 1\n'
    )
    stand_in.chmod(0o755)
    return str(stand_in)


def _read_configuration(workspace: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    if not CLI.exists():
        if shutil.which("npm") is None:
            pytest.skip(
                "Node.js/npm is not installed, so `make setup` could not install the Dev Container CLI"
            )
        pytest.fail("The Dev Container CLI is missing from .tools/: run scripts/setup.sh")
    command = [str(CLI), "read-configuration", "--workspace-folder", str(workspace),
               "--docker-path", _docker_path(tmp_path)]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def _cli_configuration(workspace: Path, tmp_path: Path) -> tuple[dict, str]:
    result = _read_configuration(workspace, tmp_path)
    assert result.returncode == 0, result.stderr
    read = json.loads(result.stdout)
    configuration = read["configuration"]
    configuration.pop("configFilePath")
    return configuration, read["workspace"]["workspaceFolder"]


def test_dev_container_cli_reads_the_whole_configuration(config, tmp_path):
    configuration, workspace = _cli_configuration(ROOT, tmp_path)
    # The CLI's parser forgives syntax errors by dropping what it cannot read, so "no error" is
    # not enough: it must have read everything the strict JSONC reader sees.
    expected = json.loads(json.dumps(config).replace("${containerWorkspaceFolder}", workspace))
    assert configuration == expected
    assert configuration["postCreateCommand"] == "make setup"
    assert configuration["containerEnv"]["PIP_CACHE_DIR"] == f"{workspace}/.cache/pip"


def test_a_truncated_configuration_is_caught(config, tmp_path):
    workspace = tmp_path / "workspace"
    shutil.copytree(DEVCONTAINER, workspace / ".devcontainer")
    broken = workspace / ".devcontainer" / "devcontainer.json"
    broken.write_text(CONFIG.read_text(encoding="utf-8")[:300])
    with pytest.raises(ValueError):
        json5.loads(broken.read_text())
    configuration, _ = _cli_configuration(workspace, tmp_path)  # the CLI shrugs...
    assert "postCreateCommand" not in configuration  # ...but reads less, which the test above sees
