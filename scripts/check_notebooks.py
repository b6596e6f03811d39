#!/usr/bin/env python3
"""Check that notebooks are committed clean: no outputs, no execution counts, no widget state.

    python scripts/check_notebooks.py [PATH ...]    (default: notebooks/)

A PATH is a notebook or a folder searched for *.ipynb (checkpoints skipped). Exits 1 and lists
each offending notebook with what is wrong; exits 0 when all are clean. Standard library only,
so CI can run it before anything is installed. To clean a notebook in JupyterLab: Edit > Clear
Outputs of All Cells, then save; or `jupyter nbconvert --clear-output --inplace NOTEBOOK`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def notebook_paths(paths: list[Path]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
        else:
            found.append(path)
    return found


def problems(path: Path) -> list[str]:
    """What keeps one notebook from being clean (an empty list if it is clean)."""
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return [f"cannot be read as a notebook: {e}"]
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        return ["cannot be read as a notebook: no list of cells"]
    found = []
    if "widgets" in (nb.get("metadata") or {}):
        found.append("widget state saved in the notebook's metadata")
    for number, cell in enumerate(nb["cells"], start=1):
        if cell.get("cell_type") != "code":
            continue
        if cell.get("outputs"):
            found.append(f"cell {number} has outputs")
        if cell.get("execution_count") is not None:
            found.append(f"cell {number} has execution_count {cell['execution_count']}")
        if "execution" in (cell.get("metadata") or {}):
            found.append(f"cell {number} has execution timing metadata")
    return found


def main(argv: list[str]) -> int:
    paths = notebook_paths([Path(a) for a in argv] or [ROOT / "notebooks"])
    dirty = {path: found for path in paths if (found := problems(path))}
    for path, found in dirty.items():
        print(f"{path}: " + "; ".join(found))
    if dirty:
        print(
            f"{len(dirty)} of {len(paths)} notebook(s) are not clean. Clear their outputs "
            "(JupyterLab: Edit > Clear Outputs of All Cells, then save) and commit again."
        )
        return 1
    print(f"{len(paths)} notebook(s) clean")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
