"""Secrets out of error texts: the one scrubber every error passes before it is stored,
logged, traced or printed.

Providers echo what they were sent: a 401 body may quote the Authorization header whole,
OpenAI quotes a key as a prefix and a suffix around stars ("sk-abc1****wxyz"). So a text
loses the secrets it is told about (whole, or by their first 8 characters) and anything
shaped like a bearer token or an `sk-` key, told about or not.
"""

from __future__ import annotations

import re

__all__ = ["REDACTED", "first_line", "redact_secrets"]

REDACTED = "***"

# "Bearer <token>" (any case, also after "Authorization:") and OpenAI-style keys
# (sk-..., sk-proj-..., stars included so a quoted "sk-ab****yz" goes whole).
_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=*-]{4,}")
_SK_KEY = re.compile(r"\bsk-[A-Za-z0-9_*-]{6,}")
_PREFIX = 8  # the part of a known secret that is enough to recognise a quoted one


def redact_secrets(text: str, *secrets: str | None) -> str:
    """`text` without `secrets` (whole, or quoted from their first 8 characters on) and
    without anything that looks like a bearer token or an sk- key."""
    for secret in secrets:
        if not secret:
            continue
        text = text.replace(secret, REDACTED)
        if len(secret) >= 12:  # the prefix of a short secret would also match ordinary words
            text = re.sub(re.escape(secret[:_PREFIX]) + r"\S*", REDACTED, text)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    return _SK_KEY.sub(REDACTED, text)


def first_line(text: str, limit: int = 300) -> str:
    """The first non-empty line of `text`, at most `limit` characters: what a user reads of
    an error whose full text (a traceback) belongs in the log and the task's detail."""
    for line in text.splitlines():
        if line.strip():
            line = line.strip()
            return line if len(line) <= limit else line[: limit - 3] + "..."
    return ""
