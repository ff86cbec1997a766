"""The scheduler loop: every worker runs one by default (`Worker(scheduler=False)`,
`agentic worker --no-scheduler` opt out), so periodic schedules run while any worker
does. Any number may run at once: each step is idempotent (queue/scheduling.py). A step
sleeps until the earliest schedule is due, at most POLL_SECONDS (so a schedule added
meanwhile is seen within that), and backs off while Redis is away."""

from __future__ import annotations

import asyncio
import logging
import random

from .errors import QueueError
from .queue import RedisTaskQueue

__all__ = ["POLL_SECONDS", "run_scheduler"]

log = logging.getLogger("agentic.scheduler")

POLL_SECONDS = 1.0


async def run_scheduler(queue: RedisTaskQueue, poll: float = POLL_SECONDS) -> None:
    """Step the queue's schedules until cancelled."""
    backoff = 0.1
    task = asyncio.current_task()
    while True:
        # A cancel that a Redis call swallowed (it returned instead of raising) would
        # leave the loop running with the request pending: it still ends here.
        if task is not None and task.cancelling():
            raise asyncio.CancelledError
        try:
            step = await queue.run_due_schedules()
        except Exception as exc:
            # A cancel that lands inside a Redis call can surface as that call's error:
            # the loop must still end, not retry (a stopping worker waits for it).
            if task is not None and task.cancelling():
                raise asyncio.CancelledError from exc
            if not isinstance(exc, QueueError):  # a bug must not end the ticks either
                log.exception("scheduler step failed, retrying in %.1f s", backoff)
            else:
                log.warning("scheduler step failed, retrying in %.1f s: %s", backoff, exc)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
            continue
        backoff = 0.1
        if step.enqueued:  # another scheduler's duplicates included
            log.debug("scheduler sent %d tick(s)", step.enqueued)
        wait = poll if step.next_due_in is None else min(poll, step.next_due_in)
        # A few ms of jitter: schedulers that woke together do not all step at once.
        await asyncio.sleep(wait + random.uniform(0, 0.01))
