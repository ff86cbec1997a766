"""utils.aio: cancellation that library code below may swallow still takes effect."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from utils.aio import cancellable, raise_if_cancelled


async def test_cancellable_returns_the_result() -> None:
    async def answer() -> int:
        return 42

    assert await cancellable(answer()) == 42


async def test_cancellable_ends_at_once_even_if_the_inner_code_swallows_the_cancel() -> None:
    entered, inner_done = asyncio.Event(), asyncio.Event()

    async def stubborn() -> None:
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:  # what a buggy library does
            await asyncio.sleep(0.2)
        inner_done.set()

    outer = asyncio.create_task(cancellable(stubborn()))
    await entered.wait()
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer
    assert not inner_done.is_set()  # the caller did not wait for it
    await inner_done.wait()


async def test_raise_if_cancelled_restores_a_lost_cancellation() -> None:
    async def loses_it() -> str:
        with contextlib.suppress(asyncio.CancelledError):  # swallowed, no uncancel()
            await asyncio.Event().wait()
        raise_if_cancelled()
        return "went on"

    task = asyncio.create_task(loses_it())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    raise_if_cancelled()  # this task was never cancelled: nothing happens
