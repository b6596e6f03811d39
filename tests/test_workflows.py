"""The GitHub Actions workflows (.github/workflows/), checked without GitHub.

They must be valid workflows (GitHub's JSON schema, shipped inside check-jsonschema, so no
network is needed). CI must run the README's test command inside the dev container on every push
and pull request, and lint: ruff at the pinned version and the clean-notebook check. The
networked "Lessons on real Phi" workflow must run every lesson in every dev container
configuration, weekly and on demand, and upload the executed notebooks; its command
(scripts/run-lessons.sh) is run here on the stand-in model, the only model this machine has.
"""

from __future__ import annotations

import json
import os
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
CONFIGS = [CONFIG, *sorted((ROOT / ".devcontainer").glob("*/devcontainer.json"))]
LESSONS_WORKFLOW = ROOT / ".github" / "workflows" / "lessons-on-phi.yml"
RUN_LESSONS = ROOT / "scripts" / "run-lessons.sh"
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


# -- the networked workflow: every lesson in every configuration ---------------------------------


@pytest.fixture(scope="module")
def lessons() -> dict:
    return load(LESSONS_WORKFLOW)


def test_lessons_workflow_runs_weekly_and_on_demand_never_on_push(lessons):
    assert set(lessons["on"]) == {"workflow_dispatch", "schedule"}
    ((cron,),) = [[entry["cron"]] for entry in lessons["on"]["schedule"]]
    minute, hour, day, month, weekday = cron.split()
    assert (day, month) == ("*", "*") and weekday in {str(d) for d in range(7)}  # once a week
    # It pulls gigabytes and runs for long: it must not hold pushes' CI, nor write anything.
    assert lessons["permissions"] == {"contents": "read", "packages": "read"}


def test_lessons_workflow_has_one_job_per_dev_container_configuration(lessons):
    (job,) = lessons["jobs"].values()
    matrix = job["strategy"]["matrix"]["include"]
    configs = {entry["config"] for entry in matrix}
    assert configs == {path.relative_to(ROOT).as_posix() for path in CONFIGS}
    names = [entry["name"] for entry in matrix]
    assert len(set(names)) == len(names)
    for entry in matrix:  # the artifact is named after the configuration's folder
        folder = Path(entry["config"]).parent.name
        assert entry["name"] == ("stand-in" if folder == ".devcontainer" else folder)
    assert job["strategy"]["fail-fast"] is False  # one configuration failing hides no other
    assert job["timeout-minutes"] >= 120  # a real Phi on 4 CPU cores, every lesson twice


def test_lessons_workflow_runs_the_lessons_inside_each_configuration(lessons):
    (job,) = lessons["jobs"].values()
    (run,) = [s for s in job["steps"] if s.get("uses", "").startswith("devcontainers/ci@")]
    options = run["with"]
    assert options["configFile"] == "${{ matrix.config }}"  # as Codespaces' devcontainer_path
    assert options["push"] == "never"
    assert options["cacheFrom"] == "${{ steps.image.outputs.name }}"  # ci.yml's image from main
    assert options["runCmd"] == "scripts/run-lessons.sh test-artifacts/lessons/${{ matrix.name }}"
    (upload,) = [
        s for s in job["steps"] if s.get("uses", "").startswith("actions/upload-artifact@")
    ]
    assert upload["if"] == "always()"  # a failed lesson's notebooks are the ones worth reading
    assert upload["with"]["path"].rstrip("/") == "test-artifacts/lessons/${{ matrix.name }}"
    assert "${{ matrix.name }}" in upload["with"]["name"]
    assert "test-artifacts/" in (ROOT / ".gitignore").read_text().split()


def _lessons_env(tmp_path: Path) -> dict[str, str]:
    """The stand-in model, on a server of this test's own (any free port, its own state)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHI_")}
    env.update(
        PHI_BACKEND="local",
        PHI_STATE_DIR=str(tmp_path / "state"),
        PHI_LOCAL_PORT="0",
        PHI_MODELS_DIR=str(tmp_path / "models"),
        PHI_LESSON_CELL_TIMEOUT="300",
    )
    return env


def _notebook(path: Path, *sources: str) -> Path:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in sources]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, str(path))
    return path


def _run_lessons(tmp_path: Path, *notebooks: Path) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path / "lessons" / "stand-in"
    command = ["bash", str(RUN_LESSONS), str(out), *map(str, notebooks)]
    result = subprocess.run(command, env=_lessons_env(tmp_path), capture_output=True, text=True,
                            timeout=600, cwd=tmp_path)  # fmt: skip
    return result, out


def _error_outputs(notebook: Path) -> list[dict]:
    cells = json.loads(notebook.read_text())["cells"]
    return [
        o
        for c in cells
        if c["cell_type"] == "code"
        for o in c["outputs"]
        if o["output_type"] == "error"
    ]


@pytest.mark.slow
def test_run_lessons_keeps_the_answers_and_gives_the_lessons_this_environment(tmp_path):
    """The workflow's command, on a real lesson and the stand-in model: what a teacher downloads."""
    wanted = _lessons_env(tmp_path)
    # The lessons must see the configuration's settings, not the test suite's hermetic ones.
    env_check = _notebook(
        tmp_path / "settings_seen.ipynb",
        "import os\n"
        f"assert os.environ['PHI_STATE_DIR'] == {wanted['PHI_STATE_DIR']!r}\n"
        f"assert os.environ['PHI_MODELS_DIR'] == {wanted['PHI_MODELS_DIR']!r}",
    )
    lesson = ROOT / "notebooks" / "01_basic_chat.ipynb"
    result, out = _run_lessons(tmp_path, env_check, lesson)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "SmolLM2" in (out / "doctor.txt").read_text()  # which model answered
    executed = out / lesson.name
    cells = json.loads(executed.read_text())["cells"]
    assert any(c.get("outputs") for c in cells if c["cell_type"] == "code")  # the answers, kept
    assert not _error_outputs(executed)
    junit = (out / "nbval.xml").read_text()
    assert (
        re.search(r'tests="([1-9]\d*)"', junit)
        and 'failures="0"' in junit
        and 'errors="0"' in junit
    )
    # It stops the server it started (a codespace's later `make lab` starts its own).
    status = subprocess.run([sys.executable, "-m", "phihelpers", "status"], env=wanted,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert "no local model server is running" in (status.stdout + status.stderr).lower()


@pytest.mark.slow
def test_run_lessons_fails_on_a_failing_lesson_and_still_keeps_it(tmp_path):
    broken = _notebook(tmp_path / "broken.ipynb", "print('before')", "raise RuntimeError('boom')")
    result, out = _run_lessons(tmp_path, broken)
    assert result.returncode != 0
    assert "something failed" in result.stdout
    (error,) = _error_outputs(out / "broken.ipynb")  # the executed copy shows the failure
    assert error["ename"] == "RuntimeError"
    assert "failed" in (out / "nbval.log").read_text()


def test_run_lessons_is_executable_and_parses():
    assert os.access(RUN_LESSONS, os.X_OK)
    syntax = subprocess.run(["bash", "-n", str(RUN_LESSONS)], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
