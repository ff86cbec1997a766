"""Cancel requests reach a worker by pub/sub on the queue's cancel channel; after every
(re)subscription it also reads the cancel flags of what it runs, so a request published
while it was not subscribed is not missed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from . import codec
from .queue import RedisTaskQueue

__all__ = ["listen_for_cancels"]

log = logging.getLogger("agentic.worker")


async def listen_for_cancels(
    queue: RedisTaskQueue,
    subscribed: asyncio.Event,
    running: Callable[[], list[str]],
    cancel: Callable[[str], None],
) -> None:
    """Forever: `cancel(task_id)` for each request; `subscribed` is set once listening."""
    while True:
        pubsub = queue.redis.pubsub()
        try:
            await pubsub.subscribe(*(keys.cancel_channel for keys in queue.layout.parts))
            subscribed.set()
            await _cancel_flagged(queue, running(), cancel)
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is not None:
                    cancel(codec.as_text(message["data"]))
        except Exception as exc:  # redis-py's errors are not all QueueErrors here
            log.warning("cancel subscription dropped, resubscribing: %s", exc)
            await asyncio.sleep(1.0)  # back off while Redis is unreachable
        finally:
            await pubsub.aclose()


async def _cancel_flagged(
    queue: RedisTaskQueue, task_ids: list[str], cancel: Callable[[str], None]
) -> None:
    if not task_ids:
        return
    async with queue.redis.pipeline(transaction=False) as pipe:
        for task_id in task_ids:
            pipe.hget(queue.keys_for(task_id).task(task_id), "cancel")
        flags = await pipe.execute()
    for task_id, flag in zip(task_ids, flags, strict=True):
        if flag == b"1":
            cancel(task_id)
