"""Redaction of secrets in text that came from runners, daemons or logs.

Applied before anything reaches an artifact: API keys and tokens in ``NAME=value`` form,
bearer headers, ``op://`` references, and well-known key shapes.
"""
from __future__ import annotations

import re

MASK = "[REDACTED]"

_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # NAME_KEY=value, NAME_TOKEN: value, api_key="value", password=value ...
    (
        re.compile(
            r"(?i)\b([A-Z0-9_]*(?:API_?KEY|_KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)[A-Z0-9_]*)"
            r"(\s*[=:]\s*)(\"[^\"]*\"|'[^']*'|[^\s,;]+)"
        ),
        r"\1\2" + MASK,
    ),
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]{6,}"), r"\1 " + MASK),
    (re.compile(r"(?i)(authorization\s*:\s*)(?!bearer\b)\S+"), r"\1" + MASK),
    (re.compile(r"op://[^\s\"',;]+"), "op://" + MASK),
    (re.compile(r"\bAIza[0-9A-Za-z_-]{20,}"), MASK),  # Google API keys
    (re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"), MASK),  # OpenAI-style secret keys
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}"), MASK),  # GitHub tokens
]


def redact(text: str | None) -> str | None:
    """Return ``text`` with secrets replaced by ``[REDACTED]`` (None stays None)."""
    if not text:
        return text
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    return text
