"""scripts/check_notebooks.py: notebooks are committed without outputs (CI runs it in `lint`)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "check_notebooks.py"


def check(*paths: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, paths)], capture_output=True, text=True, cwd=ROOT
    )


def clean_notebook() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# A lesson"), nbformat.v4.new_code_cell("print(1)")]
    return nb


def test_the_repository_notebooks_are_clean():
    result = check()  # the default: notebooks/, as CI runs it
    assert result.returncode == 0, result.stdout
    assert result.stdout.strip().endswith("clean")


def test_a_dirty_copy_fails_and_names_each_problem(tmp_path):
    shutil.copytree(
        ROOT / "notebooks", tmp_path, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".*")
    )
    nbformat.write(clean_notebook(), tmp_path / "clean.ipynb")
    dirty = clean_notebook()
    dirty.cells[1].execution_count = 3
    dirty.cells[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    dirty.cells[1].metadata["execution"] = {"iopub.execute_input": "2026-11-25T16:00:00Z"}
    dirty.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    nbformat.write(dirty, tmp_path / "dirty.ipynb")

    result = check(tmp_path)
    assert result.returncode == 1
    (line,) = [line for line in result.stdout.splitlines() if line.startswith(str(tmp_path))]
    assert line.startswith(f"{tmp_path / 'dirty.ipynb'}: ")
    for problem in ("cell 2 has outputs", "cell 2 has execution_count 3",
                    "cell 2 has execution timing metadata", "widget state"):  # fmt: skip
        assert problem in line
    assert "1 of " in result.stdout


def test_only_a_count_is_enough_to_fail(tmp_path):
    nb = clean_notebook()
    nb.cells[1].execution_count = 1
    nbformat.write(nb, tmp_path / "counted.ipynb")
    assert check(tmp_path).returncode == 1


def test_checkpoints_are_not_checked_and_a_file_can_be_named(tmp_path):
    (tmp_path / ".ipynb_checkpoints").mkdir()
    dirty = clean_notebook()
    dirty.cells[1].execution_count = 1
    nbformat.write(dirty, tmp_path / ".ipynb_checkpoints" / "lesson-checkpoint.ipynb")
    nbformat.write(clean_notebook(), tmp_path / "lesson.ipynb")
    assert check(tmp_path).returncode == 0
    assert check(tmp_path / ".ipynb_checkpoints" / "lesson-checkpoint.ipynb").returncode == 1


def test_a_file_that_is_not_a_notebook_is_reported(tmp_path):
    (tmp_path / "broken.ipynb").write_text("{ not json")
    (tmp_path / "list.ipynb").write_text(json.dumps([1, 2]))
    result = check(tmp_path)
    assert result.returncode == 1
    assert result.stdout.count("cannot be read as a notebook") == 2
