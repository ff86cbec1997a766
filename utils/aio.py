"""asyncio helpers the queue and the pipeline share."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

__all__ = ["cancellable", "raise_if_cancelled"]

T = TypeVar("T")


async def cancellable(awaitable: Awaitable[T]) -> T:
    """Await `awaitable` in a task of its own, so that cancelling the caller takes effect
    at once even if the code below swallows the cancellation (redis-py can, on Python
    3.11, when it arrives inside a command: tests/test_queue_api.py). The inner task is
    cancelled too and ends in its own time."""
    inner = asyncio.ensure_future(awaitable)
    try:
        await asyncio.wait([inner])
    except asyncio.CancelledError:
        inner.cancel()
        raise
    return inner.result()


def raise_if_cancelled() -> None:
    """Raise CancelledError if this task was asked to cancel and the request got lost
    on the way (a library caught it); code that swallows a cancellation on purpose must
    call Task.uncancel(), as asyncio asks."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
