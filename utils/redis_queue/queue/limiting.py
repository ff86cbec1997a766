"""Limiting: configure fleet-wide limits, read their use, and back a task off when its
provider said "too many requests". The claim and settle scripts enforce them
(lua/include/limits.lua); this class only writes their configuration and reads state."""

from __future__ import annotations

import math
from collections.abc import Sequence

from .. import codec
from ..errors import InvalidLimit
from ..keys import validate_limit_key, validate_task_id
from ..limits import (
    STATE_FIELDS,
    Limit,
    LimitStatus,
    check_pause,
    limit_fields,
    parse_limits,
    status_of,
)
from ..models import Settlement, TaskState
from ..new_task import check_limit_keys, check_seconds
from .administer import Administrator
from .consume import Consumer

__all__ = ["Limiting"]

_KINDS = ("r", "c", "t", "p")


class Limiting(Administrator, Consumer):
    async def set_limit(
        self,
        key: str,
        *,
        rate: float | None = None,
        per: float | None = None,
        burst: int | None = None,
        concurrency: int | None = None,
        tokens: int | None = None,
    ) -> Limit:
        """Set the kinds given for limit `key` (the others it has stay): `rate` tasks per
        `per` seconds (default 1) with `burst` at once (default: ceil(rate)); `concurrency`
        tasks running at once; `tokens` reserved per `per` seconds (default 60). Takes
        effect at the next claim, for tasks already waiting too. Returns the whole limit."""
        validate_limit_key(key)
        if rate is None and concurrency is None and tokens is None:
            raise InvalidLimit("set_limit needs rate=, concurrency= or tokens=")
        if rate is not None and tokens is not None and per is not None:
            raise InvalidLimit("give rate and tokens in two calls: each has its own per=")
        given = Limit(
            key,
            rate=rate,
            per=1.0 if per is None else per,
            burst=burst,
            concurrency=concurrency,
            tokens=tokens,
            tokens_per=60.0 if per is None else per,
        )
        keys = self.keys
        async with self._command():
            flat = [item for pair in limit_fields(given).items() for item in pair]
            await self.redis.hset(keys.limits, items=flat)
        await self._wake_limit_waiters(key)
        status = (await self._statuses(key)).get(key)
        return given if status is None else status.limit

    async def remove_limit(self, key: str) -> bool:
        """Remove limit `key` (every kind, its state and any pause); True if it existed.
        Tasks it held back are admitted at once."""
        validate_limit_key(key)
        keys = self.keys
        async with self._command():
            removed = await self.redis.hdel(keys.limits, *(f"{k}:{key}" for k in _KINDS))
        await self._wake_limit_waiters(key)
        async with self._command():
            await self.redis.delete(keys.limit_state(key), keys.limit_held(key))
        return bool(removed)

    async def get_limits(self) -> dict[str, LimitStatus]:
        """Every configured (or paused) limit with its current use, by key."""
        return await self._statuses()

    async def _statuses(self, only: str | None = None) -> dict[str, LimitStatus]:
        keys = self.keys
        async with self._command():
            fields = codec.text_fields(await self.redis.hgetall(keys.limits))
        limits, paused = parse_limits(fields)
        names = sorted(set(limits) | paused)
        if only is not None:
            names = [n for n in names if n == only]
        if not names:
            return {}
        async with self._command():
            seconds, micros = await self.redis.time()
            now_ms = int(seconds) * 1000 + int(micros) // 1000
            pipe = self.redis.pipeline(transaction=False)
            for name in names:
                pipe.hmget(keys.limit_state(name), *STATE_FIELDS)
                pipe.zcount(keys.limit_held(name), now_ms, "+inf")  # expired slots are free
            replies = await pipe.execute()
        out: dict[str, LimitStatus] = {}
        for i, name in enumerate(names):
            state, held = replies[2 * i], replies[1 + 2 * i]
            limit = limits.get(name, Limit(name))
            out[name] = status_of(limit, state, int(held), now_ms)
        return out

    async def back_off_task(
        self,
        task_id: str,
        lease_token: int | None,
        retry_after: float,
        limits: Sequence[str] | None = None,
    ) -> float:
        """A leased task's provider said "too many requests": its limits (`limits`, or every
        limit key it is bound by) admit nothing for `retry_after` seconds, fleet-wide, and
        the task goes back to pending without counting the attempt. Returns the pause in
        seconds. Raises LeaseLost."""
        validate_task_id(task_id)
        names = check_limit_keys(limits) if limits else ()
        pause = check_pause(retry_after)
        settlement = Settlement(task_id, lease_token, pause=pause, pause_limits=names)
        (state,) = await self.settle_many([settlement])  # how a worker backs off, too
        if not isinstance(state, TaskState):
            raise state
        self._touched([task_id])
        return pause

    async def set_priority_aging(self, window_seconds: float | None) -> None:
        """Priority aging for this queue: a task that waited `window_seconds` ranks one
        priority higher (two after two windows, up to CRITICAL), and within a rank the older
        task goes first, so LOW work is never starved. None or 0 turns it off: strict
        priority, FIFO within a priority. Takes effect at the next claim."""
        if window_seconds:
            window_ms = max(1, math.ceil(check_seconds("window_seconds", window_seconds) * 1000))
        async with self._command():
            for keys in self.layout.parts:
                if window_seconds:
                    await self.redis.hset(keys.stats, "aging_ms", window_ms)
                else:
                    await self.redis.hdel(keys.stats, "aging_ms")

    async def get_priority_aging(self) -> float | None:
        """The aging window in seconds, or None when priorities are strict."""
        async with self._command():
            raw = await self.redis.hget(self.keys.stats, "aging_ms")
        return int(raw) / 1000 if raw else None

    async def _wake_limit_waiters(self, key: str) -> None:
        """Workers waiting on `key` claim again: a limit that changed may admit them."""
        keys = self.keys
        if self._gate is not None:
            self._gate.active_until = float("-inf")  # this client: look again at once
        async with self._command():
            types = await self.redis.smembers(keys.limit_waiters(key))
            if types:
                await self.redis.delete(keys.limit_waiters(key))
        if types:
            await self._wake_everywhere(sorted(codec.as_text(t) for t in types))
