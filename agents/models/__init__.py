"""Model backends behind one interface: ModelBackend.complete(messages, key=...).

- ReplayBackend: recorded replies from a JSON file (offline, deterministic).
- OpenAIChatBackend: any OpenAI-compatible chat-completions endpoint.
- Both stream (`supports_streaming`, StreamingBackend): complete(..., on_chunk=f) passes
  the reply on as it arrives.
- build_backend(settings, overrides): the one a worker's settings (and a run's overrides)
  ask for, cached per configuration.
"""

from __future__ import annotations

from .base import (
    MAX_TOKENS_PER_CALL,
    ChunkCallback,
    Message,
    ModelBackend,
    ModelReply,
    ModelUsage,
    StreamingBackend,
    token_count,
)
from .errors import (
    RETRY_AFTER_CAP,
    ModelAuthError,
    ModelError,
    ModelRateLimited,
    ModelRejected,
    ModelResponseError,
    ModelTimeout,
    ModelUnavailable,
    ReplayError,
    ReplayMissing,
)
from .factory import OVERRIDABLE, build_backend, resolve_settings
from .openai import OpenAIChatBackend
from .replay import ReplayBackend

__all__ = [
    "MAX_TOKENS_PER_CALL",
    "OVERRIDABLE",
    "RETRY_AFTER_CAP",
    "ChunkCallback",
    "Message",
    "ModelAuthError",
    "ModelBackend",
    "ModelError",
    "ModelRateLimited",
    "ModelRejected",
    "ModelReply",
    "ModelResponseError",
    "ModelTimeout",
    "ModelUnavailable",
    "ModelUsage",
    "OpenAIChatBackend",
    "ReplayBackend",
    "ReplayError",
    "ReplayMissing",
    "StreamingBackend",
    "build_backend",
    "resolve_settings",
    "token_count",
]
