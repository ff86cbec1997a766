"""Handlers that test workers serve (in-process and as `agentic worker --app` subprocesses).

Handlers that must leave evidence outside Redis append a line to the file named by the
payload's "ledger" field: "<task_id> <attempt> <pid> <lease_token>".
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
import time
from pathlib import Path
from typing import Any

from utils.redis_queue.handlers import (
    HandlerRegistry,
    PermanentFailure,
    RateLimited,
    Retry,
    TaskContext,
)

registry = HandlerRegistry()


def _record(ctx: TaskContext, tag: str = "run") -> None:
    ledger = ctx.payload.get("ledger")
    if ledger:
        with Path(ledger).open("a") as f:
            f.write(f"{tag} {ctx.task_id} {ctx.attempt} {os.getpid()} {ctx.lease_token}\n")


@registry.handler("noop")
async def noop(ctx: TaskContext) -> Any:
    _record(ctx)
    return {"echo": ctx.payload.get("value")}


@registry.handler("digest")
async def digest(ctx: TaskContext) -> Any:
    """The payload's "data" hashed (claim-check tests): sleeps a minute on attempt 1 when
    "sleep_first" is set, and sends "data" back in the result when "echo" is."""
    _record(ctx, "start")
    if ctx.attempt == 1 and ctx.payload.get("sleep_first"):
        await asyncio.sleep(60)
    data = str(ctx.payload["data"])
    out: dict[str, Any] = {
        "sha256": hashlib.sha256(data.encode()).hexdigest(),
        "attempt": ctx.attempt,
        "pid": os.getpid(),
    }
    if ctx.payload.get("echo"):
        out["data"] = data
    return out


@registry.handler("sleep")
async def sleep(ctx: TaskContext) -> Any:
    _record(ctx, "start")
    await asyncio.sleep(float(ctx.payload.get("seconds", 1)))
    _record(ctx, "done")
    return "slept"


@registry.handler("block")
async def block(ctx: TaskContext) -> Any:
    """Blocks the event loop itself (a badly written async handler)."""
    _record(ctx, "start")
    time.sleep(float(ctx.payload.get("seconds", 1)))
    _record(ctx, "done")
    return "blocked"


@registry.handler("sync_sleep")
def sync_sleep(ctx: TaskContext) -> Any:
    _record(ctx, "start")
    time.sleep(float(ctx.payload.get("seconds", 1)))
    _record(ctx, "done")
    return "slept in a thread"


@registry.handler("flaky")
async def flaky(ctx: TaskContext) -> Any:
    _record(ctx)
    if ctx.attempt <= int(ctx.payload.get("failures", 1)):
        raise RuntimeError(f"failure on attempt {ctx.attempt}")
    return {"attempt": ctx.attempt}


@registry.handler("retry_later")
async def retry_later(ctx: TaskContext) -> Any:
    if ctx.attempt == 1:
        raise Retry("not ready", delay=float(ctx.payload.get("delay", 0.2)))
    return "ready"


@registry.handler("permanent")
async def permanent(ctx: TaskContext) -> Any:
    raise PermanentFailure("invalid input")


@registry.handler("crash")
async def crash(ctx: TaskContext) -> Any:
    _record(ctx)
    os._exit(3)


@registry.handler("unserializable")
async def unserializable(ctx: TaskContext) -> Any:
    return {"a set": {1, 2}}


# A plain dict also works as an --app target.
handlers = {"noop": noop, "sleep": sleep}


@registry.handler("sleep_first")
async def sleep_first(ctx: TaskContext) -> Any:
    """Slow on the first attempt only, so a rescuing worker finishes fast."""
    _record(ctx, "start")
    if ctx.attempt == 1:
        await asyncio.sleep(float(ctx.payload.get("seconds", 30)))
    _record(ctx, "done")
    return {"pid": os.getpid(), "attempt": ctx.attempt}


# Handlers that misbehave: the worker must settle their tasks and go on.


@registry.handler("sys_exit")
async def sys_exit(ctx: TaskContext) -> Any:
    raise SystemExit(3)


@registry.handler("interrupt")
async def interrupt(ctx: TaskContext) -> Any:
    raise KeyboardInterrupt


@registry.handler("sync_exit")
def sync_exit(ctx: TaskContext) -> Any:
    raise SystemExit("from a thread")


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text for you")


@registry.handler("unprintable")
async def unprintable(ctx: TaskContext) -> Any:
    raise Unprintable


@registry.handler("stubborn")
async def stubborn(ctx: TaskContext) -> Any:
    """Swallows every cancellation for `seconds` (default: far longer than any test)."""
    _record(ctx, "start")
    deadline = time.monotonic() + float(ctx.payload.get("seconds", 3600))
    while time.monotonic() < deadline:
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            continue
    return "outlived"


# Flow control: handlers that leave wall-clock evidence of when they ran.


def _stamp(ctx: TaskContext, tag: str) -> None:
    ledger = ctx.payload.get("ledger")
    if ledger:
        with Path(ledger).open("a") as f:
            f.write(f"{tag} {ctx.task_id} {time.time():.6f} {os.getpid()}\n")


@registry.handler("stamp")
async def stamp(ctx: TaskContext) -> Any:
    """Records "start" and "end" with wall-clock times around a sleep of `seconds`."""
    _stamp(ctx, "start")
    await asyncio.sleep(float(ctx.payload.get("seconds", 0)))
    _stamp(ctx, "end")
    return "stamped"


@registry.handler("provider")
async def provider(ctx: TaskContext) -> Any:
    """A model call: the task named `refuse` is told 429 on its first attempt (a marker
    file remembers it), which pauses `limit` for `retry_after` seconds fleet-wide."""
    _stamp(ctx, "start")
    marker = Path(str(ctx.payload["ledger"]) + ".refused")
    if ctx.task_id == ctx.payload.get("refuse") and not marker.exists():
        marker.write_text("1")
        _stamp(ctx, "refused")
        raise RateLimited(float(ctx.payload["retry_after"]), limits=ctx.payload.get("limit"))
    await asyncio.sleep(float(ctx.payload.get("seconds", 0)))
    ctx.report_tokens(int(ctx.payload.get("used", 0)))
    _stamp(ctx, "end")
    return "answered"


@registry.handler("qa_like")
async def qa_like(ctx: TaskContext) -> Any:
    """Runs a long command the way the QA agent runs a workspace's tests (agents.process);
    the command starts a process of its own, then writes "child <pid>" and "grandchild
    <pid>" to the ledger."""
    from agents.process import run_process

    _record(ctx, "start")
    ledger = str(ctx.payload["ledger"])
    code = (  # it starts a process of its own, as a test suite may
        "import os, subprocess, sys, time\n"
        "grandchild = subprocess.Popen(['sleep', '120'])\n"
        "with open(sys.argv[1], 'a') as f:\n"
        "    f.write(f'child {os.getpid()}\\ngrandchild {grandchild.pid}\\n')\n"
        "time.sleep(120)\n"
    )
    argv = [sys.executable, "-c", code, ledger]
    env = {"PATH": os.environ.get("PATH", "")}
    result = await run_process(argv, cwd=Path(ledger).parent, env=env, timeout=120)
    return result.returncode
