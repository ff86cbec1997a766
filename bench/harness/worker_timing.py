"""`python -m bench.harness.worker_timing OUT -m MODULE ARGS...`: run MODULE (the
`agentic worker` CLI) as __main__ with the worker's main-thread CPU charged to pieces,
written as JSON to OUT when it exits (scenario C's breakdown, bench/harness/breakdown.py).

Each piece is a set of functions of the worker runtime, wrapped here (nothing in the
engine knows): while one runs, the thread's CPU clock (time.thread_time) is charged to
its piece; a piece's function called inside another's (the lease keeper's add() inside
Worker._start) takes its own time out of the outer one. A coroutine is charged for each
of its steps, never for its waits. The rest of the thread's CPU from the first claim on
(the event loop, the claim loop's own code, the helpers) is "loop, rest". cProfile's
cumulative times cannot do this: its call stack loses track of coroutines that yield.
"""

from __future__ import annotations

import asyncio.selector_events
import functools
import json
import runpy
import sys
import time
from collections.abc import Callable, Coroutine, Generator
from typing import Any

REST = "loop, rest"


class Meter:
    """Thread CPU charged to the piece running now; REST outside every wrapped call."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.current = REST
        self.last = 0.0
        self.started = False

    def switch(self, piece: str) -> str:
        """Charge the time since the last switch to the current piece; `piece` is current
        from now on. Returns the one it replaced."""
        now = time.thread_time()
        if self.started:
            self.seconds[self.current] = self.seconds.get(self.current, 0.0) + now - self.last
        self.last = now
        previous, self.current = self.current, piece
        return previous

    def start(self) -> None:
        if not self.started:
            self.started = True
            self.last = time.thread_time()


METER = Meter()


def sync(piece: str, func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        METER.calls[piece] = METER.calls.get(piece, 0) + 1
        previous = METER.switch(piece)
        try:
            return func(*args, **kwargs)
        finally:
            METER.switch(previous)

    return wrapper


class _Stepped:
    """Awaits `coro`, charging each of its steps to `piece`."""

    def __init__(self, coro: Coroutine[Any, Any, Any], piece: str) -> None:
        self.coro, self.piece = coro, piece

    def __await__(self) -> Generator[Any, Any, Any]:
        value: Any = None
        error: BaseException | None = None
        while True:
            previous = METER.switch(self.piece)
            try:
                step = self.coro.send(value) if error is None else self.coro.throw(error)
            except StopIteration as stop:
                return stop.value
            finally:
                METER.switch(previous)
            try:
                value, error = (yield step), None
            except BaseException as exc:  # a cancellation: the coroutine sees it
                value, error = None, exc


def stepped(piece: str, func: Callable[..., Any], first: bool = False) -> Callable[..., Any]:
    @functools.wraps(func)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        if first:
            METER.start()
        METER.calls[piece] = METER.calls.get(piece, 0) + 1
        return await _Stepped(func(*args, **kwargs), piece)

    return wrapper


def install() -> None:
    """Wrap the worker runtime's functions, by piece."""
    from utils.redis_queue import codec, lease_keeper, settler, worker
    from utils.redis_queue.queue import consume

    consumer, work, keeper = consume.Consumer, worker.Worker, lease_keeper.LeaseKeeper
    transport: Any = getattr(asyncio.selector_events, "_SelectorSocketTransport")  # noqa: B009
    wrapped: list[tuple[Any, str, str, bool]] = [  # (owner, name, piece, a coroutine)
        (consumer, "claim_ready", "claim", True),
        (codec, "text_fields", "dispatch: decode", False),
        (codec, "decode_task", "dispatch: decode", False),
        (work, "_start", "dispatch: start", False),
        (work, "_execute", "dispatch: run", True),
        (work, "_finished", "dispatch: finished", False),
        (settler.Settler, "run", "settle: call", True),
        (work, "_count", "settle: count", False),
        (keeper, "add", "heartbeat", False),
        (keeper, "remove", "heartbeat", False),
        (keeper, "flush", "heartbeat", False),
        (keeper, "_read_events", "heartbeat", True),
        (consumer, "wait_for_work", "wake", True),
        (work, "_wait_for", "wake", True),
        (transport, "_read_ready", "socket reads", False),
    ]
    for owner, name, piece, is_coroutine in wrapped:
        func = getattr(owner, name)
        if is_coroutine:
            setattr(owner, name, stepped(piece, func, first=name == "claim_ready"))
        else:
            setattr(owner, name, sync(piece, func))


def main() -> int:
    if len(sys.argv) < 4 or sys.argv[2] != "-m":
        print(__doc__, file=sys.stderr)
        return 2
    out, module = sys.argv[1], sys.argv[3]
    sys.argv = [module, *sys.argv[4:]]
    install()
    code: object = 0
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code
    finally:
        METER.switch(REST)
        with open(out, "w") as f:
            json.dump({"seconds": METER.seconds, "calls": METER.calls}, f)
    return code if isinstance(code, int) else (0 if code is None else 1)


if __name__ == "__main__":
    sys.exit(main())
