"""A worker's start-up against a Redis that may not be there yet."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from redis.exceptions import RedisError

from . import codec
from .errors import RedisUnavailable
from .queue import RedisTaskQueue

__all__ = ["connect_waiting", "server_time_iso"]

log = logging.getLogger("agentic.worker")


async def connect_waiting(
    queue: RedisTaskQueue, stop: asyncio.Event, exit_on_unavailable: bool = False
) -> bool:
    """Connect, waiting out an outage with backoff (0.1 s doubling to 5 s, a line logged
    each time); False when `stop` is set first. With `exit_on_unavailable`,
    RedisUnavailable at once."""
    backoff = 0.1
    while not stop.is_set():
        try:
            await queue.connect()
            return True
        except RedisUnavailable as exc:
            if exit_on_unavailable:
                raise
            log.warning("Redis is unavailable, retrying in %.1f s: %s", backoff, exc)
            with contextlib.suppress(TimeoutError):  # a backoff, not a poll for work
                await asyncio.wait_for(stop.wait(), backoff)
            backoff = min(backoff * 2, 5.0)
    return False


async def server_time_iso(queue: RedisTaskQueue) -> str:
    """Now by the server's clock (by this host's if Redis is gone again already: it is
    only shown in the worker registry)."""
    try:
        seconds = int((await queue.redis.time())[0])
    except (RedisError, OSError):
        seconds = int(time.time())
    return codec.iso_from_ms(str(seconds * 1000)) or ""
