"""Claiming across the partitions of a queue: which partition to claim from next, and
waiting on every partition's wake-up keys at once.

`PartitionHeads` keeps what a consumer last learnt of each partition's best ready task
(each claim reports it). The next claim goes to the partition with the best priority band,
and only takes tasks of that band or better than the best band another partition is known
to hold, so a LOW task is not taken here while a CRITICAL one waits there. What is known
goes stale: after HEAD_TTL seconds, a wake-up, or a due delayed task or lease deadline, a
partition is visited again (which also promotes its due tasks and reaps its expired
leases), so no partition starves while others keep a worker busy. Among partitions of the
same band the choice rotates, so their tasks are served in turn.

`WakeWaiters` blocks on the wake-up keys of every partition. On one server, that is one
BLPOP over all of them; on a cluster each partition is its own slot, so each gets a BLPOP
of its own, kept outstanding across calls rather than cancelled (a cancelled BLPOP may
already have taken a token, and the wake-up it carried would be lost for every worker). A
token that arrives while its consumer is not waiting is handed back to the list, so an
idle worker elsewhere gets it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from ..keys import QueueKeys
from ..scripts import PENDING_BAND

__all__ = ["HEAD_TTL", "PartitionHeads", "WakeWaiters"]

HEAD_TTL = 0.1  # seconds a partition's reported head is trusted
UNREACHABLE_PAUSE = 1.0  # seconds a partition whose Redis did not answer is left out
log = logging.getLogger("agentic.queue")


@dataclass(slots=True)
class _Head:
    score: int | None = None  # best pending score; None = none ready
    known_at: float = float("-inf")  # loop time of the report; -inf = never visited
    next_event: float = float("inf")  # loop time of its next delayed due / lease deadline
    down_until: float = float("-inf")  # its Redis did not answer: left out until then


class PartitionHeads:
    """A consumer's view of each partition's best ready task."""

    def __init__(self, count: int) -> None:
        self._heads = [_Head() for _ in range(count)]
        self._turn = 0

    def stale(self, index: int) -> None:
        """Something may have arrived there (a wake-up token)."""
        self._heads[index].known_at = float("-inf")

    def report(self, index: int, head: int | None, next_event: float, now: float) -> None:
        h = self._heads[index]
        h.score, h.known_at, h.next_event = head, now, next_event

    def unreachable(self, index: int, now: float) -> None:
        h = self._heads[index]
        h.score, h.known_at, h.down_until = None, float("-inf"), now + UNREACHABLE_PAUSE

    def all_unreachable(self, now: float) -> bool:
        return all(now < h.down_until for h in self._heads)

    def stale_ones(self, now: float) -> list[int]:
        return [
            i for i, h in enumerate(self._heads) if not self._fresh(h, now) and now >= h.down_until
        ]

    def _fresh(self, h: _Head, now: float) -> bool:
        return now - h.known_at < HEAD_TTL and now < h.next_event

    def next_claim(self, now: float, skip: set[int]) -> tuple[int, int | None] | None:
        """(partition, max_score) of the next claim call: a partition whose view is stale
        first, else the one with the best band; None when every fresh view says nothing
        is ready (or all were tried this round). max_score bounds the claim to the best
        band known elsewhere (None: no bound)."""
        count = len(self._heads)
        best: int | None = None
        best_key: tuple[int, int] | None = None
        for step in range(count):
            i = (self._turn + step) % count
            h = self._heads[i]
            if i in skip or now < h.down_until:
                continue
            if not self._fresh(h, now):
                key = (0, 0)
            elif h.score is None:
                continue
            else:
                key = (1, h.score // PENDING_BAND)
            if best_key is None or key < best_key:
                best, best_key = i, key
        if best is None:
            return None
        self._turn = (best + 1) % count
        return best, self._bound(best, now)

    def _bound(self, chosen: int, now: float) -> int | None:
        bands = [
            h.score // PENDING_BAND
            for i, h in enumerate(self._heads)
            if i != chosen and h.score is not None and self._fresh(h, now)
        ]
        return (min(bands) + 1) * PENDING_BAND if bands else None

    def wait_hint(self, now: float) -> float | None:
        """Seconds until the earliest known delayed due time or lease deadline."""
        soonest = min(
            min(h.next_event, h.down_until if h.down_until > now else float("inf"))
            for h in self._heads
        )
        return None if soonest == float("inf") else max(0.0, soonest - now)


class WakeWaiters:
    """Blocks on many partitions' wake-up keys; see the module's docstring."""

    def __init__(
        self,
        blpop: Callable[[list[str], float], Awaitable[Any]],
        push_back: Callable[[str], Awaitable[Any]],
        one_call: bool,
    ) -> None:
        self._blpop = blpop  # (keys, timeout) -> awaitable of BLPOP's reply
        self._push_back = push_back  # (key) -> awaitable: hand a token back
        self._one_call = one_call  # one server: a single BLPOP over every key
        self._outstanding: dict[int, asyncio.Future[Any]] = {}
        self._down_until: dict[int, float] = {}
        self._error: BaseException | None = None
        self._waiting = False

    async def wait(
        self,
        partitions: Sequence[QueueKeys],
        keys_of: Callable[[QueueKeys], list[str]],
        seconds: float,
    ) -> set[int]:
        """Block up to `seconds`; the indexes of the partitions that got a token."""
        if self._one_call:
            by_key = {k: i for i, p in enumerate(partitions) for k in keys_of(p)}
            reply = await self._blpop(list(by_key), seconds)
            return {by_key[_text(reply[0])]} if reply else set()
        now = asyncio.get_running_loop().time()
        for i, p in enumerate(partitions):
            if i not in self._outstanding and now >= self._down_until.get(i, now):
                task = asyncio.ensure_future(self._blpop(keys_of(p), seconds))
                task.add_done_callback(lambda t, i=i: self._arrived(i, t))  # type: ignore[misc]
                self._outstanding[i] = task
        if not self._outstanding:  # every partition's Redis failed a moment ago
            assert self._error is not None
            raise self._error
        self._waiting = True
        try:
            done, _ = await asyncio.wait(
                list(self._outstanding.values()),
                timeout=seconds,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            self._waiting = False
        woken: set[int] = set()
        failed = False
        for i, finished in list(self._outstanding.items()):
            if finished in done:
                del self._outstanding[i]
                if finished.cancelled():
                    continue
                error = finished.exception()
                if error is not None:
                    # That partition's Redis is away (a failover): wait on the others
                    # and try it again in a moment.
                    self._down_until[i] = asyncio.get_running_loop().time() + UNREACHABLE_PAUSE
                    self._error, failed = error, True
                elif finished.result():
                    woken.add(i)
        if failed and not woken and not self._outstanding:
            assert self._error is not None
            raise self._error  # every partition failed: the caller backs off
        return woken

    def _arrived(self, index: int, task: asyncio.Future[Any]) -> None:
        if self._waiting or task.cancelled() or task.exception() is not None:
            return
        reply = task.result()
        if not reply:
            return
        # Nobody here is waiting to use it: give the token back for another worker.
        self._outstanding.pop(index, None)
        back = asyncio.ensure_future(self._push_back(_text(reply[0])))
        back.add_done_callback(_log_failure)

    async def close(self) -> None:
        tasks = list(self._outstanding.values())
        self._outstanding.clear()
        for task in tasks:
            task.cancel()
        for waiter in tasks:
            with contextlib.suppress(asyncio.CancelledError, RedisError, Exception):
                await waiter


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _log_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("could not hand a wake-up token back: %s", task.exception())
