"""The GitHub Actions workflows (.github/workflows/), checked without GitHub.

They must be valid workflows (GitHub's JSON schema, shipped inside check-jsonschema, so no
network is needed), run the README's test command inside the dev container on every push and
pull request, and lint: ruff at the pinned version and the clean-notebook check.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import json5
import pytest
import yaml
from readme import readme_commands

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / ".devcontainer" / "devcontainer.json"
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.y*ml"))
CHECK_JSONSCHEMA = str(Path(sys.executable).parent / "check-jsonschema")


def load(path: Path) -> dict:
    workflow = yaml.safe_load(path.read_text(encoding="utf-8"))
    # YAML 1.1 reads the key `on` as True.
    workflow["on"] = workflow.pop(True, workflow.get("on"))
    return workflow


@pytest.fixture(scope="module")
def ci() -> dict:
    return load(ROOT / ".github" / "workflows" / "ci.yml")


def steps(workflow: dict):
    for job_name, job in workflow["jobs"].items():
        for step in job["steps"]:
            yield job_name, step


def validate(paths: list[Path], schema: str) -> subprocess.CompletedProcess:
    command = [CHECK_JSONSCHEMA, "--builtin-schema", schema, *map(str, paths)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_workflows_validate_against_the_github_workflow_schema():
    assert WORKFLOWS
    for schema in ("vendor.github-workflows", "custom.github-workflows-require-timeout"):
        result = validate(WORKFLOWS, schema)
        assert result.returncode == 0, result.stdout + result.stderr


def test_schema_check_catches_a_broken_workflow(tmp_path):
    broken = tmp_path / "ci.yml"
    broken.write_text(WORKFLOWS[0].read_text().replace("runs-on:", "runs_on:"))
    result = validate([broken], "vendor.github-workflows")
    assert result.returncode == 1
    assert "'runs-on' is a required property" in result.stdout


def test_ci_runs_on_every_push_and_pull_request(ci):
    assert set(ci["on"]) == {"push", "pull_request"}
    assert all(ci["on"][event] is None for event in ci["on"])  # no branch filters


def test_ci_runs_the_readme_test_command_inside_the_devcontainer(ci):
    runs = [step for _, step in steps(ci) if step.get("uses", "").startswith("devcontainers/ci@")]
    assert len(runs) == 1
    assert runs[0]["uses"] == "devcontainers/ci@v0.3"
    options = runs[0]["with"]
    assert options["runCmd"] == "make test"
    assert "make test" in readme_commands()
    assert not {"subFolder", "configFile"} & set(options)  # the .devcontainer/ Codespaces uses


def test_ci_caches_pip_and_npm_where_the_devcontainer_keeps_them(ci):
    devcontainer = json5.loads(CONFIG.read_text(encoding="utf-8"))
    (cache,) = [step for _, step in steps(ci) if step.get("uses", "").startswith("actions/cache@")]
    cached = set(cache["with"]["path"].split())
    for variable in ("PIP_CACHE_DIR", "npm_config_cache"):
        in_container = devcontainer["containerEnv"][variable]
        assert in_container.startswith("${containerWorkspaceFolder}/")
        assert in_container.removeprefix("${containerWorkspaceFolder}/") in cached
    assert "requirements.txt" in cache["with"]["key"]


def test_ci_reuses_the_image_with_the_prebuilt_wheel(ci):
    (run,) = [step for _, step in steps(ci) if step.get("uses", "").startswith("devcontainers/ci@")]
    options = run["with"]
    assert options["cacheFrom"] == options["imageName"]
    assert options["refFilterForPush"] == "refs/heads/main"  # pull requests never push
    assert ci["jobs"]["test"]["permissions"]["packages"] == "write"


def test_lint_runs_the_pinned_ruff_and_the_notebook_check(ci):
    commands = "\n".join(step.get("run", "") for job, step in steps(ci) if job == "lint")
    assert re.search(r"^ruff==\S+$", (ROOT / "requirements.txt").read_text(), re.M)
    assert "grep -E '^ruff==' requirements.txt" in commands
    assert "ruff check ." in commands
    assert "python scripts/check_notebooks.py" in commands


def test_actions_are_pinned_to_a_version():
    for path in WORKFLOWS:
        for _, step in steps(load(path)):
            if "uses" in step:
                assert re.fullmatch(r"[\w.-]+/[\w.-]+@v\d+(\.\d+)*", step["uses"]), step["uses"]
