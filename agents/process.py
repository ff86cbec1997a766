"""Running a command with a hard deadline: its own process group, killed as a whole.

A test suite may start processes of its own or hang; on timeout (or when the task is
cancelled) the whole group is SIGKILLed, and leftovers of a run that exited are killed
too, so nothing outlives the QA step or holds its output pipe open. The group also
dies (SIGKILL) with the worker that started it, even a SIGKILLed one: a guard process
leads it and kills it on the parent-death signal (utils/parent_death.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from utils.parent_death import group_dying_with_this_process

__all__ = ["ProcessResult", "run_process"]

KEEP_BYTES = 64_000  # enough for unittest's summary and the last tracebacks
DRAIN_SECONDS = 5.0  # reading what is left after the group was killed


@dataclass(frozen=True, slots=True)
class ProcessResult:
    returncode: int  # negative: killed by that signal
    output: str  # the tail of stdout + stderr, at most KEEP_BYTES
    timed_out: bool
    duration_seconds: float


async def run_process(
    argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], timeout: float
) -> ProcessResult:
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *group_dying_with_this_process(argv),
        cwd=cwd,
        env=dict(env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,  # a group of its own, to kill with everything it started
    )
    assert proc.stdout is not None
    tail = bytearray()
    pump = asyncio.create_task(_pump(proc.stdout, tail))
    timed_out = False
    try:
        try:
            await asyncio.wait_for(proc.wait(), max(timeout, 0.0))
        except TimeoutError:
            timed_out = True
    finally:
        _kill_group(proc.pid)
        if proc.returncode is None:
            await proc.wait()
        # Bounded: a grandchild in a session of its own may still hold the pipe open.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(pump, DRAIN_SECONDS)
    assert proc.returncode is not None
    return ProcessResult(
        returncode=proc.returncode,
        output=tail.decode("utf-8", "replace"),
        timed_out=timed_out,
        duration_seconds=time.monotonic() - started,
    )


async def _pump(stream: asyncio.StreamReader, tail: bytearray) -> None:
    while chunk := await stream.read(65536):
        tail += chunk
        if len(tail) > 2 * KEEP_BYTES:
            del tail[:-KEEP_BYTES]
    del tail[:-KEEP_BYTES]


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
