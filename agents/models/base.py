"""The one interface every model backend implements, what it returns, and what it cost."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from utils.config import ModelSettings

__all__ = ["Message", "ModelBackend", "ModelReply", "ModelUsage"]

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": "..."}


@dataclass(frozen=True, slots=True)
class ModelReply:
    """A model's answer and the tokens it took."""

    content: str
    prompt_tokens: int
    completion_tokens: int
    model: str


class ModelBackend(Protocol):
    """Answers chat messages. `key` names the call ("<task_type>:<subtask_id>", e.g.
    "dev:calc"): the replay backend looks its answer up by it; others may log it."""

    async def complete(self, messages: list[Message], *, key: str) -> ModelReply: ...


@dataclass(frozen=True, slots=True)
class ModelUsage:
    """Tokens and dollars of one or more model calls, as agents report them."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    model: str = ""

    @classmethod
    def of(cls, reply: ModelReply, settings: ModelSettings) -> ModelUsage:
        """The usage of `reply`, priced with the worker's per-1k-token prices."""
        cost = (
            reply.prompt_tokens * settings.prompt_price_per_1k
            + reply.completion_tokens * settings.completion_price_per_1k
        ) / 1000
        return cls(reply.prompt_tokens, reply.completion_tokens, cost, reply.model)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: ModelUsage) -> ModelUsage:
        return ModelUsage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.cost_usd + other.cost_usd,
            other.model or self.model,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "cost_usd": round(self.cost_usd, 8),  # sub-cent prices, without float noise
            "model": self.model,
        }
