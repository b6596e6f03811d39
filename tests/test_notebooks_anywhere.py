"""Lessons open from anywhere: a copy of notebooks/ outside the repository still runs.

A learner may download a notebook or copy the folder somewhere else. Files a lesson needs
(`.env.example` in 00, `samples/js` in 09) are found through the installed package
(`phihelpers.lessons.project_path`), never by searching upwards from the working directory.
The two notebooks run with nbval in a subprocess whose working directory is the copy, with this
session's (hermetic) environment, so they share its local model server.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ("00_setup.ipynb", "09_javascript.ipynb")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_two_notebooks_run_from_a_copy_outside_the_repository(tmp_path):
    copy = tmp_path / "my-notebooks"
    shutil.copytree(ROOT / "notebooks", copy, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    assert ROOT not in copy.resolve().parents  # really outside the repository

    result = subprocess.run(
        [
            sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env",
            "--nbval-cell-timeout=180", "-p", "no:cacheprovider", "-q", "--color=no",
            *(str(copy / name) for name in NOTEBOOKS),
        ],
        cwd=copy,
        env=dict(os.environ),  # conftest.py made it hermetic: the local backend, this session's state
        capture_output=True,
        text=True,
        timeout=840,
    )  # fmt: skip
    output = result.stdout + result.stderr
    returncode = result.returncode
    assert returncode == 0, f"notebooks failed when run from {copy}:\n{output[-6000:]}"
    assert "StopIteration" not in output
