"""What README.md tells a reader to run, for the tests that hold other files to it."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> set[str]:
    """Every line of README.md's fenced code blocks: the commands a reader is told to run."""
    commands, fenced = set(), False
    for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif fenced and line.strip():
            commands.add(line.strip().removeprefix("$ "))
    return commands
