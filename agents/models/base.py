"""The one interface every model backend implements, what it returns, and what it cost."""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from utils.config import ModelSettings

__all__ = [
    "MAX_TOKENS_PER_CALL",
    "ChunkCallback",
    "Message",
    "ModelBackend",
    "ModelReply",
    "ModelUsage",
    "StreamingBackend",
    "token_count",
]

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": "..."}

ChunkCallback = Callable[[str], Awaitable[None]]
"""Takes each piece of a reply as it streams in (an agent passes its task's ctx.emit)."""

MAX_TOKENS_PER_CALL = 10**9
"""More tokens than any model reads or writes in one call: a provider's count above it is
a bug (or hostile) and is clamped here, not billed as a $2M run."""


def token_count(value: object) -> tuple[int, str | None]:
    """A provider's token count as an int in [0, MAX_TOKENS_PER_CALL], and what was wrong
    with it (None when nothing). Missing is 0 without a flag; an integral float or a
    decimal string is taken; anything else counts 0 and is flagged, never raised, since the
    reply it came with is valid and paid for."""
    if value is None:
        return 0, None
    number: int | None = None
    if isinstance(value, bool):
        number = None
    elif isinstance(value, int):
        number = value
    elif isinstance(value, float) and math.isfinite(value) and value == int(value):
        number = int(value)
    elif isinstance(value, str) and re.fullmatch(r"-?[0-9]{1,30}", value.strip()):
        number = int(value.strip())
    if number is None:
        return 0, f"not a token count: {str(value)[:40]!r}"
    if number < 0:
        return 0, f"negative token count {number}"
    if number > MAX_TOKENS_PER_CALL:
        return MAX_TOKENS_PER_CALL, f"token count {number} clamped to {MAX_TOKENS_PER_CALL}"
    return number, None


@dataclass(frozen=True, slots=True)
class ModelReply:
    """A model's answer and the tokens it took."""

    content: str
    prompt_tokens: int
    completion_tokens: int
    model: str
    usage_flags: tuple[str, ...] = ()  # what token_count corrected in the provider's usage


class ModelBackend(Protocol):
    """Answers chat messages. `key` names the call ("<task_type>:<subtask_id>", e.g.
    "dev:calc"): the replay backend looks its answer up by it; others may log it.

    A backend that can stream sets `supports_streaming = True` and takes
    `on_chunk: ChunkCallback | None = None` in complete(); agents pass it only then, so a
    backend of one's own written to this protocol keeps working unchanged."""

    async def complete(self, messages: list[Message], *, key: str) -> ModelReply: ...


class StreamingBackend(Protocol):
    """A ModelBackend whose complete() also takes `on_chunk` (`supports_streaming`)."""

    supports_streaming: bool

    async def complete(
        self, messages: list[Message], *, key: str, on_chunk: ChunkCallback | None = None
    ) -> ModelReply: ...


@dataclass(frozen=True, slots=True)
class ModelUsage:
    """Tokens and dollars of one or more model calls, as agents report them."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    model: str = ""
    flags: tuple[str, ...] = ()  # what was wrong with a provider's counts (see token_count)

    @classmethod
    def of(cls, reply: ModelReply, settings: ModelSettings) -> ModelUsage:
        """The usage of `reply`, priced with the worker's per-1k-token prices (its counts
        checked again: a backend of one's own may not use token_count)."""
        prompt, prompt_flag = token_count(reply.prompt_tokens)
        completion, completion_flag = token_count(reply.completion_tokens)
        cost = (
            prompt * settings.prompt_price_per_1k + completion * settings.completion_price_per_1k
        ) / 1000
        flags = reply.usage_flags + tuple(f for f in (prompt_flag, completion_flag) if f)
        return cls(prompt, completion, cost, reply.model, flags)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: ModelUsage) -> ModelUsage:
        return ModelUsage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.cost_usd + other.cost_usd,
            other.model or self.model,
            self.flags + other.flags,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "cost_usd": round(self.cost_usd, 8),  # sub-cent prices, without float noise
            "model": self.model,
            **({"flags": list(self.flags)} if self.flags else {}),  # only when the provider erred
        }
