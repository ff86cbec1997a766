"""A backend that answers from recorded replies: deterministic, offline, free.

The file is JSON:

    {"model": "gpt-4o-mini",
     "replies": {"dev:calc": {"content": "...", "usage": {"prompt_tokens": 412,
                                                          "completion_tokens": 230}}}}

Keys are "<task_type>:<subtask_id>" (the `key` the agents pass to complete()).

Streaming: with `on_chunk`, the recorded content is passed on in pieces of about
`chunk_chars` characters (cut after a space or newline where one is near), `chunk_delay`
seconds apart, as a provider would stream it, so the demo shows output arriving offline.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from .base import ChunkCallback, Message, ModelReply, token_count
from .errors import ReplayError, ReplayMissing

__all__ = ["ReplayBackend"]


class ReplayBackend:
    """Reads `path` once, on the first call, and answers every key from it."""

    supports_streaming = True  # complete() takes on_chunk

    def __init__(
        self, path: str | Path, *, chunk_chars: int = 24, chunk_delay: float = 0.0
    ) -> None:
        if chunk_chars < 1 or chunk_delay < 0:
            raise ValueError("chunk_chars must be >= 1 and chunk_delay >= 0")
        self.path = Path(path)
        self.chunk_chars = chunk_chars
        self.chunk_delay = chunk_delay
        self._model = "replay"
        self._replies: dict[str, ModelReply] | None = None

    def __repr__(self) -> str:
        return f"ReplayBackend({str(self.path)!r})"

    async def complete(
        self, messages: list[Message], *, key: str, on_chunk: ChunkCallback | None = None
    ) -> ModelReply:
        replies = self._replies if self._replies is not None else self._load()
        try:
            reply = replies[key]
        except KeyError:
            raise ReplayMissing(key, str(self.path)) from None
        if on_chunk is not None:
            for i, piece in enumerate(split_chunks(reply.content, self.chunk_chars)):
                if i and self.chunk_delay:
                    await asyncio.sleep(self.chunk_delay)  # the pace of a provider
                await on_chunk(piece)
        return reply

    def _load(self) -> dict[str, ModelReply]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ReplayError(f"cannot read replay file {self.path}: {exc}") from exc
        if not isinstance(data, dict) or not isinstance(data.get("replies"), dict):
            raise ReplayError(f"replay file {self.path} has no 'replies' object")
        model = str(data.get("model") or "replay")
        self._replies = {
            str(key): _reply(key, entry, model, self.path) for key, entry in data["replies"].items()
        }
        return self._replies


def split_chunks(text: str, size: int) -> list[str]:
    """`text` in pieces of about `size` characters that join back to it exactly, each cut
    after the last space or newline of its window when there is one."""
    pieces: list[str] = []
    start = 0
    while start < len(text):
        end = min(len(text), start + size)
        if end < len(text):
            window = text[start:end]
            cut = max(window.rfind(" "), window.rfind("\n"))
            if cut > 0:
                end = start + cut + 1
        pieces.append(text[start:end])
        start = end
    return pieces


def _reply(key: str, entry: Any, model: str, path: Path) -> ModelReply:
    if not isinstance(entry, dict) or not isinstance(entry.get("content"), str):
        raise ReplayError(f"reply {key!r} in {path} needs a 'content' string")
    usage = entry.get("usage") or {}
    if not isinstance(usage, dict):
        raise ReplayError(f"reply {key!r} in {path} has a malformed 'usage'")
    prompt, prompt_flag = token_count(usage.get("prompt_tokens", 0))
    completion, completion_flag = token_count(usage.get("completion_tokens", 0))
    flags = tuple(flag for flag in (prompt_flag, completion_flag) if flag)
    if flags:
        raise ReplayError(f"reply {key!r} in {path} has a malformed 'usage': {flags[0]}")
    return ModelReply(entry["content"], prompt, completion, str(entry.get("model") or model))
