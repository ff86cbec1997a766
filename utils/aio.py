"""asyncio helpers the queue and the pipeline share."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

__all__ = ["cancel_all", "cancellable", "raise_if_cancelled", "wait_first"]

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


async def wait_first(*awaitables: Awaitable[Any]) -> set[asyncio.Future[Any]]:
    """Wait for the first of `awaitables` to finish; cancel (and await) the others.
    Returns the finished ones; their exceptions are the caller's to look at."""
    waiters: list[asyncio.Future[Any]] = [asyncio.ensure_future(a) for a in awaitables]
    try:
        done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await cancel_all(waiters)
    return done


async def cancel_all(
    tasks: Sequence[asyncio.Future[Any]], give_up_after: float | None = None
) -> set[asyncio.Future[Any]]:
    """Cancel and await tasks, cancelling again if one swallowed it: on Python 3.11 a
    cancel that lands as an inner wait_for completes can be lost (CPython gh-86296).
    With `give_up_after` seconds, returns the tasks still running then (they ignore
    their cancellation); without, waits for every one."""
    loop = asyncio.get_running_loop()
    deadline = None if give_up_after is None else loop.time() + give_up_after
    pending = {t for t in tasks if not t.done()}
    while pending:
        if deadline is not None and loop.time() >= deadline:
            return pending
        for t in pending:
            t.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.5)
    await asyncio.gather(*tasks, return_exceptions=True)
    return set()
