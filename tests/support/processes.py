"""Starting `agentic worker` as real subprocesses for tests that send signals."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def agentic_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipeline.cli", *args]


def agentic_env(redis_url: str, queue_name: str, **extra: str) -> dict[str, str]:
    """Environment for an `agentic` subprocess on this test's queue (fast retries)."""
    env = dict(os.environ)
    env.update(
        AGENTIC_REDIS_URL=redis_url,
        AGENTIC_QUEUE_NAME=queue_name,
        AGENTIC_RETRY__BASE_SECONDS="0.05",
        AGENTIC_RETRY__CAP_SECONDS="0.2",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


class SpawnedWorkers:
    """Worker processes a test started, each in a session (process group) of its own so
    signals reach only it and its lease keeper; whatever is left is killed at the end."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, argv: list[str], env: dict[str, str], **popen: Any) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, start_new_session=True, **popen)
        self.procs.append(proc)
        return proc

    def alive(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.procs if p.poll() is None]

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL the worker and its lease keeper (its process group)."""
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    async def stop_all(self, timeout: float = 20.0) -> list[int]:
        """SIGTERM every live worker and wait for each exit code."""
        live = self.alive()
        for proc in live:
            proc.send_signal(signal.SIGTERM)
        return [await wait_exit(proc, timeout) for proc in live]

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGCONT)  # a stopped one must see the kill
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


class WorkerProcesses(SpawnedWorkers):
    """`agentic worker` processes on one queue (tests.support.worker_apps handlers)."""

    def __init__(self, redis_url: str, queue_name: str) -> None:
        super().__init__()
        self.redis_url = redis_url
        self.queue_name = queue_name

    def env(self, **extra: str) -> dict[str, str]:
        return agentic_env(self.redis_url, self.queue_name, **extra)

    def start(self, *args: str, lease: float = 30.0, **env: str) -> subprocess.Popen[bytes]:
        argv = agentic_argv("worker", "--app", "tests.support.worker_apps:registry", *args)
        return self.spawn(argv, self.env(AGENTIC_LEASE_SECONDS=str(lease), **env))


@contextmanager
def worker_processes(redis_url: str, queue_name: str) -> Iterator[WorkerProcesses]:
    procs = WorkerProcesses(redis_url, queue_name)
    try:
        yield procs
    finally:
        procs.cleanup()


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 10.0) -> Any:
    """Wait for something no Redis key can signal (another process's progress)."""
    deadline = time.monotonic() + timeout
    while not (value := await check()):
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)
    return value


async def wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"process {proc.pid} still running after {timeout} s")
        await asyncio.sleep(0.02)
    return proc.returncode


def ledger_lines(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


def most_at_once(path: Path) -> tuple[int, int]:
    """From a ledger of "start"/"end" stamps (worker_apps' stamp handlers: the third field
    is the wall-clock time): (the most handlers running at once, how many stamps)."""
    events = sorted(
        (float(line[2]), 1 if line[0] == "start" else -1)
        for line in ledger_lines(path)
        if line[0] in ("start", "end")
    )
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak, len(events)
