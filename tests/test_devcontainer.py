"""The dev container configurations (.devcontainer/), checked without Docker or a network.

Codespaces offers each `devcontainer.json` as a choice: the default (.devcontainer/, the shipped
stand-in model: CI's environment too) and one folder per real-Phi configuration. Each must be
what Codespaces, VS Code and CI read (the Dev Container CLI parses it), build the one image, run
the README's set-up command first, forward the right ports and bake in no key. The settings each
produces are checked through phihelpers' own settings code, and the Ollama feature's scripts
are run here against stand-ins (a fake release archive, a fake `ollama`). The default must also
offer keys as secrets only and prebuild llama-cpp-python where `make setup` will find it.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import json5
import pytest
from readme import readme_commands

ROOT = Path(__file__).resolve().parent.parent
DEVCONTAINER = ROOT / ".devcontainer"
CONFIG = DEVCONTAINER / "devcontainer.json"
DOCKERFILE = DEVCONTAINER / "Dockerfile"
CLI = ROOT / ".tools" / "node_modules" / ".bin" / "devcontainer"
# Every configuration Codespaces lists: .devcontainer/devcontainer.json and .devcontainer/*/.
CONFIGS = {"default": CONFIG} | {
    path.parent.name: path for path in sorted(DEVCONTAINER.glob("*/devcontainer.json"))
}
PHI_CONFIGS = ("phi-4-mini-foundry-local", "phi-4-mini-local", "phi-4-mini-ollama")
OLLAMA_FEATURE = DEVCONTAINER / "phi-4-mini-ollama" / "ollama"
FOUNDRY_SCRIPT = ROOT / "scripts" / "foundry-local.sh"
FOUNDRY_SERVICE = ROOT / "scripts" / "foundry_local_service.py"
SECRETS = {
    "AZURE_OPENAI_ENDPOINT",
    "AZURE_OPENAI_API_KEY",
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


def _read_configuration(
    workspace: Path, tmp_path: Path, config: Path | None = None, features: bool = False
) -> subprocess.CompletedProcess:
    if not CLI.exists():
        if shutil.which("npm") is None:
            pytest.skip(
                "Node.js/npm is not installed, so `make setup` could not install the Dev Container CLI"
            )
        pytest.fail("The Dev Container CLI is missing from .tools/: run scripts/setup.sh")
    command = [str(CLI), "read-configuration", "--workspace-folder", str(workspace),
               "--docker-path", _docker_path(tmp_path)]  # fmt: skip
    if config is not None:  # what Codespaces' devcontainer_path picks
        command += ["--config", str(config)]
    if features:  # resolve the features too (local ones only: OCI ones need the network)
        command.append("--include-features-configuration")
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def _cli_read(
    workspace: Path, tmp_path: Path, config: Path | None = None, features: bool = False
) -> dict:
    result = _read_configuration(workspace, tmp_path, config, features)
    assert result.returncode == 0, result.stderr
    read = json.loads(result.stdout)
    read["configuration"].pop("configFilePath")
    return read


def _cli_configuration(
    workspace: Path, tmp_path: Path, config: Path | None = None
) -> tuple[dict, str]:
    read = _cli_read(workspace, tmp_path, config)
    return read["configuration"], read["workspace"]["workspaceFolder"]


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
    text = CONFIG.read_text(encoding="utf-8")
    broken.write_text(text[: text.index('"postCreateCommand"')])  # cut off mid-object
    with pytest.raises(ValueError):
        json5.loads(broken.read_text())
    configuration, _ = _cli_configuration(workspace, tmp_path)  # the CLI shrugs...
    assert "postCreateCommand" not in configuration  # ...but reads less, which the test above sees


# -- every configuration Codespaces offers ------------------------------------------------------


def _jsonc(path: Path) -> dict:
    return json5.loads(path.read_text(encoding="utf-8"))


def _steps(command: str) -> list[str]:
    """A lifecycle command's steps, in order (they are joined with &&)."""
    return [step.strip() for step in command.split("&&")]


def _readme_command_lines() -> set[str]:
    """README commands without their trailing `# comment`."""
    return {line.split(" #", 1)[0].strip() for line in readme_commands()}


def _container_env(configuration: dict) -> dict[str, str]:
    return {**configuration.get("containerEnv", {}), **configuration.get("remoteEnv", {})}


def _gb(size: str) -> float:
    number, unit = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(gb|mb|tb)", size.lower()).groups()
    return float(number) * {"mb": 1e-3, "gb": 1.0, "tb": 1e3}[unit]


@pytest.fixture(scope="module")
def cli_configs(tmp_path_factory) -> dict[str, tuple[dict, str]]:
    """Each configuration as the Dev Container CLI reads it (Codespaces' devcontainer_path)."""
    tmp = tmp_path_factory.mktemp("cli")
    return {name: _cli_configuration(ROOT, tmp, path) for name, path in CONFIGS.items()}


def test_codespaces_offers_the_stand_in_and_the_real_phi_configurations():
    assert set(CONFIGS) == {"default", *PHI_CONFIGS}
    names = [_jsonc(path)["name"] for path in CONFIGS.values()]
    assert len(set(names)) == len(names), "Codespaces lists them by name: names must differ"
    # One "Open in GitHub Codespaces" link per configuration, in the README and the docs.
    for doc in (ROOT / "README.md", ROOT / "docs" / "codespaces.md"):
        text = doc.read_text(encoding="utf-8")
        for path in CONFIGS.values():
            link = (
                "https://codespaces.new/OWNER/REPO?quickstart=1&devcontainer_path="
                f"{path.relative_to(ROOT).as_posix()}"
            )
            assert link in text, f"{doc.name} has no Codespaces link for {path}"


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_the_cli_reads_each_configuration_whole(name, cli_configs):
    text = CONFIGS[name].read_text(encoding="utf-8")
    with pytest.raises(json.JSONDecodeError):  # JSONC: it has comments
        json.loads(text)
    configuration, workspace = cli_configs[name]
    # The CLI drops what it cannot parse, so it must have read all the strict reader sees.
    expected = json.loads(
        json.dumps(json5.loads(text)).replace("${containerWorkspaceFolder}", workspace)
    )
    assert configuration == expected


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_each_configuration_builds_the_one_image_with_node_and_the_editor(name):
    path = CONFIGS[name]
    config = _jsonc(path)
    # One Dockerfile, one build context: every configuration shares the prebuilt llama.cpp wheel.
    assert (path.parent / config["build"]["dockerfile"]).resolve() == DOCKERFILE
    assert (path.parent / config["build"]["context"]).resolve() == ROOT
    assert config["features"]["ghcr.io/devcontainers/features/node:1"] == {"version": "20"}
    assert config["remoteUser"] == "vscode"
    vscode = config["customizations"]["vscode"]
    assert {"ms-python.python", "ms-toolsai.jupyter"} <= set(vscode["extensions"])
    assert vscode["settings"]["python.defaultInterpreterPath"].endswith("/.venv/bin/python")


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_each_configuration_runs_the_readme_setup_first_and_forwards_the_lesson_ports(name):
    from jupyter_server.serverapp import DEFAULT_JUPYTER_SERVER_PORT

    from phihelpers.config import DEFAULT_LOCAL_PORT

    config = _jsonc(CONFIGS[name])
    assert _steps(config["postCreateCommand"])[0] == "make setup"
    assert config["forwardPorts"][:2] == [DEFAULT_JUPYTER_SERVER_PORT, DEFAULT_LOCAL_PORT]
    for port in config["forwardPorts"]:
        assert config["portsAttributes"][str(port)]["label"]


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_no_configuration_bakes_in_a_key(name):
    config = _jsonc(CONFIGS[name])
    baked = {**_container_env(config), **config["build"].get("args", {})}
    assert not [n for n in baked if re.search(r"KEY|TOKEN|SECRET|PASSWORD", n, re.I)]


@pytest.mark.parametrize("name", PHI_CONFIGS)
def test_real_phi_configurations_ask_for_a_machine_that_holds_phi_4_mini(name):
    from phihelpers import catalog

    config = _jsonc(CONFIGS[name])
    need = config["hostRequirements"]
    model_gb = catalog.get("phi-4-mini").gguf_size_bytes / 1e9  # 2.49 GB, Q4_K_M
    # Memory: the weights, a 4K context and its buffers (3-4 GB), plus the editor, JupyterLab
    # and kernels. Disk: the model beside a multi-GB image. Cores: 4, so that generation gets
    # more than one thread (the local server uses all cores but one; Ollama one per physical core).
    assert _gb(need["memory"]) >= 8 > 2 * model_gb
    assert _gb(need["storage"]) >= 32
    assert need["cpus"] >= 4
    # They configure the backend themselves: a PHI_BACKEND secret would compete with it.
    assert "secrets" not in config


def test_default_settings_are_the_shipped_stand_in(cli_configs):
    from phihelpers.config import load_settings

    configuration, _ = cli_configs["default"]
    settings = load_settings(env=_container_env(configuration))
    assert (settings.backend, settings.model, settings.local_model_path) == ("local", None, None)
    assert _steps(configuration["postCreateCommand"]) == ["make setup"]  # no download


def test_phi_4_mini_local_settings_serve_the_phi_that_post_create_pulled(cli_configs, tmp_path):
    from phihelpers import catalog
    from phihelpers.config import load_settings
    from phihelpers.server.engine import ModelFileError
    from phihelpers.server.models import PULL_RECORD, ModelRegistry

    configuration, workspace = cli_configs["phi-4-mini-local"]
    env = _container_env(configuration)
    settings = load_settings(env=env)
    assert (settings.backend, settings.model) == ("local", "phi-4-mini")
    # The post-create command is the README's set-up, then the README's pull of that model.
    steps = _steps(configuration["postCreateCommand"])
    assert steps == ["make setup", f".venv/bin/python -m phihelpers pull {settings.model}"]
    assert set(steps) <= _readme_command_lines()
    entry = catalog.get(settings.model)
    assert entry.pullable and entry.pinned and re.fullmatch(r"[0-9a-f]{64}", entry.sha256)
    # Pulled models live in the workspace, which survives a rebuild, and which git ignores.
    relative = settings.models_dir.relative_to(workspace)
    assert relative.parts[0] == ".cache"
    assert ".cache/" in (ROOT / ".gitignore").read_text(encoding="utf-8").split()

    # The server's own choice of its default model, in a stand-in for the workspace:
    here = load_settings(env={k: v.replace(workspace, str(tmp_path)) for k, v in env.items()})
    assert here.models_dir == tmp_path / relative
    with pytest.raises(ModelFileError, match=f"pull {entry.name}"):  # before the pull
        ModelRegistry.from_settings(here)
    pulled = catalog.local_path(entry, here.models_dir)  # where `pull` puts the verified file
    pulled.parent.mkdir(parents=True)
    pulled.write_bytes(b"GGUF" + bytes(60))  # a stand-in, with the record `pull` writes beside it
    record = pulled.with_name(pulled.name + PULL_RECORD)
    record.write_text(json.dumps({"size": 64, "sha256": entry.sha256}))
    registry = ModelRegistry.from_settings(here)
    assert (registry.default.name, registry.default.path) == (entry.model, pulled)


def test_phi_4_mini_ollama_settings_are_the_ollama_recipe_on_the_pulled_model(cli_configs):
    from phihelpers.config import load_settings

    configuration, _ = cli_configs["phi-4-mini-ollama"]
    feature = json.loads((OLLAMA_FEATURE / "devcontainer-feature.json").read_text())
    env = {**feature["containerEnv"], **_container_env(configuration)}
    settings = load_settings(env=env)
    assert (settings.backend, settings.recipe) == ("openai", "ollama")
    assert settings.openai_base_url == "http://localhost:11434/v1"
    assert not settings.key_is_set  # Ollama takes any key
    # The model the lessons ask for is the one post-create pulled, once Ollama answers.
    assert _steps(configuration["postCreateCommand"]) == [
        "make setup",
        "ollama-up --wait",
        f"ollama pull {settings.model}",
    ]
    assert settings.model == "phi4-mini"
    # The lessons' URL reaches the address Ollama binds (loopback; forwarded, labelled).
    url = urlsplit(settings.openai_base_url)
    host, port = feature["containerEnv"]["OLLAMA_HOST"].rsplit(":", 1)
    assert url.port == int(port) in configuration["forwardPorts"]
    assert ipaddress.ip_address(host).is_loopback
    assert ipaddress.ip_address(socket.gethostbyname(url.hostname)).is_loopback


# -- the Ollama feature (.devcontainer/phi-4-mini-ollama/ollama/) -------------------------------


def test_the_cli_resolves_the_ollama_feature_with_the_pinned_release(tmp_path):
    """The CLI reads the local feature as Codespaces would (OCI features need the network)."""
    workspace = tmp_path / "workspace"
    folder = workspace / ".devcontainer" / "phi-4-mini-ollama"
    shutil.copytree(DEVCONTAINER / "phi-4-mini-ollama", folder)
    config = _jsonc(folder / "devcontainer.json")
    config["features"] = {k: v for k, v in config["features"].items() if k.startswith("./")}
    (folder / "devcontainer.json").write_text(json.dumps(config))
    read = _cli_read(workspace, tmp_path, folder / "devcontainer.json", features=True)
    ((feature,),) = [s["features"] for s in read["featuresConfiguration"]["featureSets"]]
    declared = json.loads((OLLAMA_FEATURE / "devcontainer-feature.json").read_text())
    assert feature["id"] == "ollama"
    assert feature["entrypoint"] == "/usr/local/bin/ollama-up"
    assert feature["containerEnv"] == declared["containerEnv"]
    # The configuration pins the same release the feature defaults to: one version, one checksum.
    defaults = {name: option["default"] for name, option in declared["options"].items()}
    assert feature["value"] == defaults
    assert re.fullmatch(r"\d+\.\d+\.\d+", defaults["version"])
    assert re.fullmatch(r"[0-9a-f]{64}", defaults["sha256"])
    install = (OLLAMA_FEATURE / "install.sh").read_text()
    assert (
        f"VERSION:-{defaults['version']}" in install and f"SHA256:-{defaults['sha256']}" in install
    )


def _fake_release(tmp_path: Path, version: str) -> tuple[str, str]:
    """A stand-in for Ollama's release archive (same layout): (download base URL, its SHA-256)."""
    members = {
        "bin/ollama": b"#!/bin/sh\necho 'ollama version is stand-in'\n",
        "lib/ollama/libggml-base.so": b"cpu",
        "lib/ollama/libggml-cpu-haswell.so": b"cpu",
        "lib/ollama/cuda_v12/libggml-cuda.so": b"gpu",
        "lib/ollama/cuda_v13/libggml-cuda.so": b"gpu",
        "lib/ollama/mlx_cuda_v13/libmlx.so": b"gpu",
        "lib/ollama/vulkan/libggml-vulkan.so": b"gpu",
        "lib/ollama/rocm/librocblas.so": b"gpu",
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            archive.addfile(info, io.BytesIO(data))
    release = tmp_path / "releases" / f"v{version}"
    release.mkdir(parents=True)
    (release / "ollama-linux-amd64.tgz").write_bytes(buffer.getvalue())
    return (tmp_path / "releases").as_uri(), hashlib.sha256(buffer.getvalue()).hexdigest()


def _run_install(tmp_path: Path, base: str, sha256: str) -> subprocess.CompletedProcess:
    if shutil.which("curl") is None or os.uname().machine != "x86_64":
        pytest.skip("the feature's install.sh needs curl and an x86_64 machine, like a codespace")
    env = {
        **os.environ,
        "VERSION": "0.13.0",
        "SHA256": sha256,
        "OLLAMA_FEATURE_PREFIX": str(tmp_path / "prefix"),
        "OLLAMA_FEATURE_DOWNLOAD_BASE": base,
    }
    return subprocess.run(["sh", str(OLLAMA_FEATURE / "install.sh")], env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def test_the_ollama_feature_installs_the_checked_release_without_gpu_libraries(tmp_path):
    base, sha256 = _fake_release(tmp_path, "0.13.0")
    result = _run_install(tmp_path, base, sha256)
    assert result.returncode == 0, result.stdout + result.stderr
    prefix = tmp_path / "prefix"
    installed = sorted(p.relative_to(prefix).as_posix() for p in prefix.rglob("*") if p.is_file())
    assert installed == [
        "bin/ollama",
        "bin/ollama-up",
        "lib/ollama/libggml-base.so",
        "lib/ollama/libggml-cpu-haswell.so",
    ]
    assert os.access(prefix / "bin" / "ollama-up", os.X_OK)


def test_the_ollama_feature_refuses_an_archive_with_another_checksum(tmp_path):
    base, sha256 = _fake_release(tmp_path, "0.13.0")
    result = _run_install(tmp_path, base, "0" * 64)
    assert result.returncode != 0
    assert "does not have SHA-256" in result.stderr and "sha256" in result.stderr
    assert not (tmp_path / "prefix" / "bin").exists()  # nothing unpacked


def _fake_ollama(tmp_path: Path, comes_up: bool = True) -> dict[str, str]:
    """A stand-in `ollama`: `serve` answers `list` half a second after it starts."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    up = tmp_path / "up"
    (bin_dir / "ollama").write_text(
        "#!/bin/sh\n"
        f'case "$1" in\n'
        f'  list) [ -f "{up}" ] ;;\n'
        f'  serve) echo serve >> "{tmp_path / "serves"}"; sleep 0.5; '
        f"{'touch ' + str(up) if comes_up else 'true'}; "
        # stays `ollama serve` in the process table, as the real one does, until SIGTERM
        "sleep 60 & child=$!; trap 'kill $child; exit 0' TERM; wait $child ;;\n"
        "esac\n"
    )
    (bin_dir / "ollama").chmod(0o755)
    return {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "OLLAMA_UP_LOG": str(tmp_path / "serve.log"),
        "OLLAMA_UP_PIDFILE": str(tmp_path / "serve.pid"),
        "OLLAMA_UP_WAIT_SECONDS": "5",
    }


def _ollama_up(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", str(OLLAMA_FEATURE / "ollama-up.sh"), *args], env=env,
                          capture_output=True, text=True, timeout=30)  # fmt: skip


def _stop_stand_in(tmp_path: Path) -> None:
    pidfile = tmp_path / "serve.pid"
    if pidfile.exists():
        try:
            os.kill(int(pidfile.read_text()), signal.SIGTERM)
        except ProcessLookupError:
            pass


def test_ollama_up_starts_one_server_in_the_background_and_waits_for_it(tmp_path):
    env = _fake_ollama(tmp_path)
    try:
        started = time.monotonic()
        entrypoint = _ollama_up(env)  # as the container's entrypoint: must return at once
        assert entrypoint.returncode == 0, entrypoint.stderr
        assert time.monotonic() - started < 0.5 * 0.9 + 1  # did not wait for the server
        ready = _ollama_up(env, "--wait")  # as post-create, before `ollama pull`
        assert ready.returncode == 0, ready.stderr
        assert "Ollama answers on" in ready.stdout
        again = _ollama_up(env, "--wait")  # a server that answers is left alone
        assert again.returncode == 0
        assert (tmp_path / "serves").read_text().split() == ["serve"]
    finally:
        _stop_stand_in(tmp_path)


def test_ollama_up_says_so_when_the_server_never_answers(tmp_path):
    env = _fake_ollama(tmp_path, comes_up=False)
    (tmp_path / "serve.log").write_text("Error: listen tcp 127.0.0.1:11434: bind: address in use\n")
    try:
        result = _ollama_up({**env, "OLLAMA_UP_WAIT_SECONDS": "2"}, "--wait")
        assert result.returncode == 1
        assert "did not answer within 2 s" in result.stderr
        assert "address in use" in result.stderr  # the log's tail, quoted
    finally:
        _stop_stand_in(tmp_path)


# -- Foundry Local (.devcontainer/phi-4-mini-foundry-local/, scripts/foundry-local.sh) ----------


def test_phi_4_mini_foundry_local_settings_reach_the_service_address(cli_configs):
    from phihelpers.config import load_settings

    configuration, workspace = cli_configs["phi-4-mini-foundry-local"]
    env = _container_env(configuration)
    settings = load_settings(env=env)
    assert (settings.backend, settings.recipe) == ("openai", "foundry-local")
    # Not Foundry Local's dynamic port: the address the service is told to bind, plus /v1.
    assert settings.openai_base_url == env["FOUNDRY_LOCAL_URL"] + "/v1"
    assert settings.model is None  # the one model the service lists on GET /v1/models
    url = urlsplit(settings.openai_base_url)
    assert ipaddress.ip_address(url.hostname).is_loopback
    assert url.port in configuration["forwardPorts"]
    assert _steps(configuration["postCreateCommand"]) == [
        "make setup",
        "scripts/foundry-local.sh setup",
        "scripts/foundry-local.sh start --wait",
    ]
    assert configuration["postStartCommand"] == "scripts/foundry-local.sh start"
    assert Path(env["FOUNDRY_LOCAL_HOME"]).relative_to(workspace).parts[0] == ".cache"
    assert re.search(r"^SDK_VERSION=\d+\.\d+\.\d+$", FOUNDRY_SCRIPT.read_text(), re.M)  # pinned


# A stand-in for foundry-local-sdk with the calls the service makes (checked by hand against
# foundry-local-sdk 2.2.1 on this machine: it installs, initializes and starts its web service on
# Debian bookworm; its catalog and models need the network). Its web service answers GET /v1/models.
FAKE_SDK = """
import json, os, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

def record(*event):
    with open(os.environ["FAKE_SDK_LOG"], "a") as log:
        log.write(json.dumps(event) + "\\n")

class Configuration:
    class WebService:
        def __init__(self, urls=None, external_url=None):
            self.urls = urls
    def __init__(self, app_name, model_cache_dir=None, web=None, **_):
        self.web = web
        record("configuration", app_name, model_cache_dir, web.urls if web else None)

class Model:
    id = "Phi-4-mini-instruct-generic-cpu:5"
    is_cached = os.environ.get("FAKE_SDK_CACHED") == "1"
    def download(self, progress_callback=None, cancel_event=None):
        for percent in (0.0, 42.0, 100.0):
            progress_callback(percent)
        record("download")
    def load(self):
        record("load")
    def unload(self):
        record("unload")

class Catalog:
    def get_model(self, alias):
        record("get_model", alias)
        return Model() if alias == "phi-4-mini" else None

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"object": "list", "data": [{"id": Model.id}]}).encode()
        self.send_response(200 if self.path == "/v1/models" else 404)
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass

class FoundryLocalManager:
    instance = None
    @staticmethod
    def initialize(config):
        FoundryLocalManager.instance = FoundryLocalManager(config)
    def __init__(self, config):
        self.config, self.catalog, self.urls = config, Catalog(), None
    def start_web_service(self):
        url = urlsplit(self.config.web.urls)
        self.server = ThreadingHTTPServer((url.hostname, url.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.urls = [self.config.web.urls]
        record("start_web_service")
    def stop_web_service(self):
        self.server.shutdown()
        record("stop_web_service")
"""


def _fake_sdk_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    package = tmp_path / "sdk" / "foundry_local_sdk"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(FAKE_SDK)
    with socket.socket() as probe:  # a free port for the service
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return {
        **os.environ,
        "PYTHONPATH": str(tmp_path / "sdk"),
        "FAKE_SDK_LOG": str(tmp_path / "sdk.log"),
        "FOUNDRY_LOCAL_HOME": str(tmp_path / "foundry-local"),
        "FOUNDRY_LOCAL_CACHE": str(tmp_path / "foundry-local" / "models"),
        "FOUNDRY_LOCAL_URL": f"http://127.0.0.1:{port}",
        "FOUNDRY_LOCAL_MODEL": "phi-4-mini",
        **extra,
    }


def _sdk_events(tmp_path: Path) -> list[list]:
    log = tmp_path / "sdk.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_the_foundry_service_downloads_the_model_once_into_the_cache(tmp_path):
    env = _fake_sdk_env(tmp_path)
    result = subprocess.run([sys.executable, str(FOUNDRY_SERVICE), "download"], env=env,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "100.0 %" in result.stdout
    cache = env["FOUNDRY_LOCAL_CACHE"]
    assert _sdk_events(tmp_path) == [
        ["configuration", "phi-quick-start", cache, None],  # no web service for a download
        ["get_model", "phi-4-mini"],
        ["download"],
    ]
    again = subprocess.run([sys.executable, str(FOUNDRY_SERVICE), "download"],
                           env={**env, "FAKE_SDK_CACHED": "1"}, capture_output=True, text=True,
                           timeout=60)  # fmt: skip
    assert again.returncode == 0 and "already in" in again.stdout
    assert _sdk_events(tmp_path)[-1] == ["get_model", "phi-4-mini"]  # no second download


def test_the_foundry_service_names_a_model_the_catalog_lacks(tmp_path):
    env = _fake_sdk_env(tmp_path, FOUNDRY_LOCAL_MODEL="phi-9")
    result = subprocess.run([sys.executable, str(FOUNDRY_SERVICE), "download"], env=env,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 1
    assert "no model 'phi-9'" in result.stderr and "network" in result.stderr


def test_foundry_local_sh_starts_the_service_waits_for_its_model_and_stops_it(tmp_path):
    if shutil.which("curl") is None:
        pytest.skip("scripts/foundry-local.sh asks the service with curl, as a codespace has it")
    env = _fake_sdk_env(tmp_path, FAKE_SDK_CACHED="1")
    venv_bin = Path(env["FOUNDRY_LOCAL_HOME"]) / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "python").symlink_to(sys.executable)  # stands for the venv `setup` makes

    def script(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(FOUNDRY_SCRIPT), *args], env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip

    try:
        started = script("start", "--wait")
        assert started.returncode == 0, started.stdout + started.stderr
        assert f"answers on {env['FOUNDRY_LOCAL_URL']}/v1" in started.stdout
        again = script("start")  # postStartCommand when it already runs: leaves it alone
        assert again.returncode == 0 and "starting" not in again.stdout
        events = _sdk_events(tmp_path)
        assert events[0] == ["configuration", "phi-quick-start", env["FOUNDRY_LOCAL_CACHE"],
                             env["FOUNDRY_LOCAL_URL"]]  # fmt: skip
        assert [e[0] for e in events[1:]] == ["get_model", "load", "start_web_service"]
    finally:
        stopped = script("stop")
    assert stopped.returncode == 0
    deadline = time.monotonic() + 30
    while _sdk_events(tmp_path)[-1] != ["unload"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [e[0] for e in _sdk_events(tmp_path)[-2:]] == ["stop_web_service", "unload"]


def test_foundry_local_sh_says_why_when_the_service_dies_at_start(tmp_path):
    env = _fake_sdk_env(tmp_path, FOUNDRY_LOCAL_MODEL="phi-9")
    venv_bin = Path(env["FOUNDRY_LOCAL_HOME"]) / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "python").symlink_to(sys.executable)
    result = subprocess.run(["bash", str(FOUNDRY_SCRIPT), "start", "--wait"], env=env,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 1
    assert "stopped during start-up" in result.stderr
    assert "no model 'phi-9'" in result.stderr  # the log's tail, quoted
