"""The original quick-start page (tests/seed/), whose code blocks are this project's contract."""

from __future__ import annotations

import re
from pathlib import Path

SEED = Path(__file__).parent / "seed" / "GitHubModel_QuickStart.nl.md"


def code_blocks(containing: str) -> list[str]:
    """The page's fenced code blocks (they carry no language tag) that contain `containing`."""
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", SEED.read_text(encoding="utf-8"), re.M | re.S)
    return [b for b in blocks if containing in b]
