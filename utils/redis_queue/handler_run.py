"""Running one handler's coroutine under its timeout, whatever the handler raises or
ignores, and rendering what it raised.

- SystemExit and KeyboardInterrupt raised by handler code are that task's failure
  (HandlerExit), not a request to stop the worker: signals to the process still are.
- A handler that swallows its cancellation (at a timeout, a cancel request or shutdown)
  gets CANCEL_GRACE seconds to end; after that it is abandoned: the attempt is settled as
  timed out (or as what stopped it), `on_abandoned` is told, and the coroutine runs on
  detached until it returns.
- describe() renders any exception, even one whose str() raises.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["CANCEL_GRACE", "HandlerExit", "describe", "run_async_handler"]

log = logging.getLogger("agentic.worker")

CANCEL_GRACE = 5.0  # seconds a cancelled handler has to end before it is abandoned
_TRACEBACK_CHARS = 4000


class HandlerExit(Exception):
    """A handler raised SystemExit or KeyboardInterrupt."""


async def _guarded(call: Awaitable[Any]) -> Any:
    # Inside the handler's own task: a BaseException escaping a task would stop the loop.
    try:
        return await call
    except (SystemExit, KeyboardInterrupt) as exc:
        raise HandlerExit(f"the handler raised {describe(exc)}") from None


async def run_async_handler(
    call: Awaitable[Any],
    timeout: float | None,
    task_id: str,
    on_abandoned: Callable[[asyncio.Task[Any]], None],
) -> Any:
    """The handler's result; TimeoutError at `timeout`; CancelledError when the caller
    is cancelled. With a timeout the handler runs in a task of its own, so one that
    swallows its cancellation can be abandoned; without one it runs inline (a task costs
    ~10 us, a tenth of a no-op task's whole run), and a stop that it ignores is bounded by
    the worker's drain instead."""
    if timeout is None:
        return await _guarded(call)
    inner = asyncio.ensure_future(_guarded(call))
    try:
        done, _ = await asyncio.wait({inner}, timeout=timeout)
    except asyncio.CancelledError:
        await _stop(inner, task_id, on_abandoned)
        raise
    if not done:
        if await _stop(inner, task_id, on_abandoned):
            raise asyncio.CancelledError  # the caller was cancelled meanwhile: that wins
        raise TimeoutError
    return inner.result()


async def _stop(
    inner: asyncio.Task[Any], task_id: str, on_abandoned: Callable[[asyncio.Task[Any]], None]
) -> bool:
    """Cancel the handler and wait up to CANCEL_GRACE for it; returns whether the caller
    was cancelled meanwhile (it stops waiting then)."""
    inner.cancel()
    cancelled = False
    try:
        await asyncio.wait({inner}, timeout=CANCEL_GRACE)
    except asyncio.CancelledError:
        cancelled = True
    if not inner.done():
        log.error(
            "the handler of task %s ignored its cancellation; abandoned it (the coroutine "
            "runs on, holding its slot, until it returns)",
            task_id,
        )
        on_abandoned(inner)
    elif not inner.cancelled():
        inner.exception()  # retrieved: its outcome no longer matters
    return cancelled


def describe(exc: BaseException, with_traceback: bool = False) -> str:
    """`Type: message` (and the traceback's tail), however broken the exception is."""
    name = type(exc).__name__
    try:
        text = f"{name}: {exc}"
    except Exception as broken:
        try:
            text = f"{name} (its str() raised {type(broken).__name__})"
        except Exception:
            text = "an exception that cannot be rendered"
    if with_traceback:
        try:
            detail = "".join(traceback.format_exception(exc))[-_TRACEBACK_CHARS:]
        except Exception:
            detail = "(the traceback cannot be rendered)"
        text = f"{text}\n{detail}"
    return text
