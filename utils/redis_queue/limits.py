"""Fleet-wide limits: what a limit is (its kinds and numbers), how it is stored in the
queue's `limits` hash (lua/include/limits.lua reads the same encoding), and its status.

A limit key names a task type (every task of the type is bound by it) or any name tasks
list at enqueue (`limits=["openai", "tenant:acme"]`). One key may carry up to three kinds
at once: a rate (tasks per `per` seconds, with a burst), a concurrency (tasks running at
once) and a token budget (tokens per `tokens_per` seconds, reserved from each task's
`cost_tokens`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import InvalidLimit
from .keys import validate_limit_key

__all__ = [
    "MAX_PAUSE",
    "STATE_FIELDS",
    "Limit",
    "LimitStatus",
    "check_pause",
    "limit_fields",
    "parse_limits",
    "status_of",
]

MAX_PER = 7 * 86400  # a week: a rate or budget window longer than that is a mistake
MAX_RATE = 10**9
MAX_PAUSE = 86400.0  # a day: a provider asking for longer is paused for a day


@dataclass(frozen=True, slots=True)
class Limit:
    """One limit key's configuration (None: that kind is not set)."""

    key: str
    rate: float | None = None  # tasks admitted per `per` seconds ...
    per: float = 1.0
    burst: int | None = None  # ... at most this many at once (default: ceil(rate))
    concurrency: int | None = None  # tasks holding a slot at once
    tokens: int | None = None  # tokens reserved per `tokens_per` seconds
    tokens_per: float = 60.0

    def __post_init__(self) -> None:
        validate_limit_key(self.key)
        if self.rate is not None:
            _positive("rate", self.rate, MAX_RATE)
            _positive("per", self.per, MAX_PER)
            if self.burst is not None:
                _count("burst", self.burst)
        if self.concurrency is not None:
            _count("concurrency", self.concurrency)
        if self.tokens is not None:
            _count("tokens", self.tokens)
            _positive("per", self.tokens_per, MAX_PER)

    @property
    def effective_burst(self) -> int | None:
        if self.rate is None:
            return None
        return self.burst if self.burst is not None else max(1, math.ceil(self.rate))

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"key": self.key}
        if self.rate is not None:
            out.update(rate=self.rate, per=self.per, burst=self.effective_burst)
        if self.concurrency is not None:
            out["concurrency"] = self.concurrency
        if self.tokens is not None:
            out.update(tokens=self.tokens, tokens_per=self.tokens_per)
        return out


@dataclass(frozen=True, slots=True)
class LimitStatus:
    """A limit as it stands: its configuration and its current use."""

    limit: Limit
    running: int  # tasks holding a concurrency slot
    rate_available: float | None  # tasks the rate admits right now
    tokens_available: float | None  # tokens the budget holds right now (< 0: in debt)
    paused_for: float  # seconds it admits nothing more (a provider's Retry-After)
    waiting: int  # ready tasks it held back at the last claim that looked
    waiting_since: float | None  # server time (s) of that claim

    def as_dict(self) -> dict[str, object]:
        return {
            **self.limit.as_dict(),
            "running": self.running,
            "rate_available": self.rate_available,
            "tokens_available": self.tokens_available,
            "paused_for": self.paused_for,
            "waiting": self.waiting,
        }


def _positive(name: str, value: object, most: float) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0 < value <= most
    ):
        raise InvalidLimit(f"{name} must be a number > 0 and <= {most:,}, not {value!r}")


def _count(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_RATE:
        raise InvalidLimit(f"{name} must be an int >= 1, not {value!r}")


def check_pause(seconds: object) -> float:
    """A RateLimited pause in seconds: >= 0, at most MAX_PAUSE."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or math.isnan(seconds):
        raise InvalidLimit(f"retry_after must be a number of seconds, not {seconds!r}")
    return min(max(0.0, float(seconds)), MAX_PAUSE)


def limit_fields(limit: Limit) -> dict[str, str]:
    """The `limits` hash fields of the kinds `limit` sets."""
    out: dict[str, str] = {}
    if limit.rate is not None:
        out[f"r:{limit.key}"] = f"{limit.rate!r} {limit.per * 1000!r} {limit.effective_burst}"
    if limit.concurrency is not None:
        out[f"c:{limit.key}"] = str(limit.concurrency)
    if limit.tokens is not None:
        out[f"t:{limit.key}"] = f"{limit.tokens} {limit.tokens_per * 1000!r}"
    return out


def parse_limits(fields: dict[str, str]) -> tuple[dict[str, Limit], set[str]]:
    """The configured limits of a `limits` hash, and the keys marked paused. Fields that
    do not parse (a hand edit) are skipped, as the claim skips them."""
    kinds: dict[str, dict[str, object]] = {}
    paused: set[str] = set()
    for name, value in fields.items():
        kind, _, key = name.partition(":")
        parts = value.split()
        try:
            if kind == "r" and len(parts) == 3:
                rate, per_ms, burst = float(parts[0]), float(parts[1]), int(parts[2])
                kinds.setdefault(key, {}).update(rate=rate, per=per_ms / 1000, burst=burst)
            elif kind == "c" and len(parts) == 1:
                kinds.setdefault(key, {})["concurrency"] = int(parts[0])
            elif kind == "t" and len(parts) == 2:
                tokens, per_ms = int(parts[0]), float(parts[1])
                kinds.setdefault(key, {}).update(tokens=tokens, tokens_per=per_ms / 1000)
            elif kind == "p":
                paused.add(key)
        except ValueError:
            continue
    limits: dict[str, Limit] = {}
    for key, values in kinds.items():
        try:
            limits[key] = Limit(key, **values)  # type: ignore[arg-type]
        except InvalidLimit:
            continue
    return limits, paused


STATE_FIELDS = ("tat", "ttat", "pause", "waiting", "waiting_at")


def _number(value: object) -> float | None:
    if value is None:
        return None
    try:
        return float(value.decode() if isinstance(value, bytes) else str(value))
    except ValueError:
        return None


def status_of(limit: Limit, state: Sequence[object], held: int, now_ms: int) -> LimitStatus:
    """A limit's status from its state hash's STATE_FIELDS (as read), the live holders of
    its slots and the server time."""
    tat, ttat, pause, waiting, waiting_at = (_number(v) for v in state)
    rate_available = None
    if limit.rate is not None:
        interval = limit.per * 1000 / limit.rate
        burst = limit.effective_burst or 1
        rate_available = max(0.0, burst - max(0.0, (tat or 0) - now_ms) / interval)
    tokens_available = None
    if limit.tokens is not None:
        per_token = limit.tokens_per * 1000 / limit.tokens
        tokens_available = limit.tokens - max(0.0, (ttat or 0) - now_ms) / per_token
    return LimitStatus(
        limit,
        running=held,
        rate_available=None if rate_available is None else round(rate_available, 3),
        tokens_available=None if tokens_available is None else round(tokens_available, 1),
        paused_for=max(0.0, ((pause or 0) - now_ms) / 1000),
        waiting=int(waiting or 0),
        waiting_since=None if waiting_at is None else waiting_at / 1000,
    )
