"""What a leaked secret looks like: used by tests/test_secrets.py and by every test server's
stop() (tests/server_process.py), so each server log a test produced is checked."""

from __future__ import annotations

import re

PATTERNS = {
    "GitHub token": re.compile(
        r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36}\b|\bgithub_pat_[A-Za-z0-9_]{22,}"
    ),
    "OpenAI key": re.compile(r"(?<![A-Za-z0-9_-])sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}"),
    "Azure key": re.compile(
        r"(?i)(?:key|token|secret|password|credential)[\"'\s]*[:=][\"'\s]*[0-9a-f]{32}\b"
    ),
}
# Key-shaped strings committed on purpose, each obviously fake, and why.
KNOWN_FAKES = {
    "sk-test-0123456789-very-secret": "tests/test_config.py: the value its masking tests hide",
}


def find_secrets(text: str, keys: dict[str, str]) -> list[str]:
    """Where text holds a token-shaped string or one of `keys` (name -> value): kind and line
    number only, so a report never repeats the secret."""

    def line(pos: int) -> int:
        return text.count("\n", 0, pos) + 1

    found = [
        f"{name} on line {line(m.start())}"
        for name, pattern in PATTERNS.items()
        for m in pattern.finditer(text)
        if m.group(0) not in KNOWN_FAKES
    ]
    for name, key in keys.items():
        if key and (pos := text.find(key)) >= 0:
            found.append(f"the test API key '{name}' on line {line(pos)}")
    return found
