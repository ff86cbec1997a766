"""`agentic worker` subprocesses (C, D, E, T): spawning and stopping them, and the CPU and
memory their process tree used, read from /proc."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from bench.harness.config import ROOT
from bench.harness.context import Bench
from bench.harness.probe import server_ms

WORKER_APP = "bench.apps:registry"
WORKER_CONCURRENCY = 10
WORKER_STOP_TIMEOUT = 30.0  # SIGTERM, then SIGKILL to the process group after this
WORKER_START_TIMEOUT = 60.0  # spawn -> first completion, on a loaded machine
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def worker_env(bench: Bench, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """`agentic worker`'s environment: this benchmark's Redis and queue, and none of the
    caller's other AGENTIC_* settings (a lease or retry override would change what is
    measured) but `extra` (G: AGENTIC_REDIS_CLUSTER, AGENTIC_PARTITIONS). A `.env` file in
    the repository root would still apply."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTIC_")}
    env["AGENTIC_REDIS_URL"] = bench.url
    env["AGENTIC_QUEUE_NAME"] = bench.queue_name
    if not bench.events:
        env["AGENTIC_EVENTS"] = "false"
    env.update(extra or {})
    return env


def process_table() -> dict[int, tuple[int, float, float]]:
    """pid -> (parent pid, CPU seconds used, CPU seconds of the children it reaped) of
    every process in /proc ({} off Linux)."""
    table: dict[int, tuple[int, float, float]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return table
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:  # exited meanwhile
            continue
        # After the command name: state, ppid, ..., utime, stime, cutime, cstime (12th to
        # 15th), in ticks.
        utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
        table[int(name)] = (int(fields[1]), (utime + stime) / CLK_TCK, (cutime + cstime) / CLK_TCK)
    return table


def vm_rss(pid: int) -> int:
    """Resident set size of a process in bytes (0 once it exited, or off Linux)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024  # in kB
    except OSError:
        pass
    return 0


def descendants(root: int, table: dict[int, tuple[int, float, float]]) -> list[int]:
    """root and every live process below it."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            found.append(pid)
            todo.extend(children.get(pid, []))
    return found


def process_role(pid: int, root: int, processes: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
    except OSError:
        return "gone"
    if b"keeper_process" in cmdline or b"lease_keeper" in cmdline:
        return "keeper"
    if pid == root and processes > 1:
        return "supervisor"
    return "worker"


@dataclass
class WorkerProcs:
    """An `agentic worker` subprocess (a supervisor when processes > 1) and its tree."""

    proc: asyncio.subprocess.Process
    processes: int
    spawn_ms: float  # Redis server time just before the spawn
    log_path: Path
    returncode: int | None = None
    stop_s: float = 0.0  # SIGTERM -> exit

    def cpu(self) -> dict[str, float]:
        """CPU seconds used so far by the tree, per role: worker, keeper, supervisor."""
        table = process_table()
        totals: dict[str, float] = {}
        for pid in descendants(self.proc.pid, table):
            role = process_role(pid, self.proc.pid, self.processes)
            totals[role] = totals.get(role, 0.0) + table[pid][1]
        return totals

    def rss(self) -> dict[str, int]:
        """Resident bytes of the tree now, per role (VmRSS from /proc/<pid>/status)."""
        totals: dict[str, int] = {}
        for pid in descendants(self.proc.pid, process_table()):
            role = process_role(pid, self.proc.pid, self.processes)
            totals[role] = totals.get(role, 0) + vm_rss(pid)
        return totals

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def stop(self) -> int:
        """SIGTERM, then wait for the exit; SIGKILL to the whole group on timeout."""
        if self.proc.returncode is None:
            t0 = time.perf_counter()
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), WORKER_STOP_TIMEOUT)
            except TimeoutError:
                print(f"worker {self.proc.pid} ignored SIGTERM; killing it", file=sys.stderr)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: children too
                await self.proc.wait()
            self.stop_s = time.perf_counter() - t0
        assert self.proc.returncode is not None
        self.returncode = self.proc.returncode
        return self.returncode


def cpu_delta(start: dict[str, float], end: dict[str, float]) -> dict[str, float]:
    return {role: end[role] - start.get(role, 0.0) for role in sorted(end)}


def per_task_us(cpu: dict[str, float], tasks: int) -> dict[str, float]:
    return {role: seconds / tasks * 1e6 for role, seconds in cpu.items()}


async def until_quiet(workers: WorkerProcs, quiet_s: float = 0.2, limit_s: float = 5.0) -> None:
    """Until the worker's process tree used no CPU for `quiet_s` (at most `limit_s`): the
    lease keeper imports redis-py for ~0.1 s of CPU after the worker already serves tasks,
    and nothing in Redis tells when it is done, so this polls /proc (benchmark driver only)."""
    deadline = time.monotonic() + limit_s
    last = workers.cpu()
    while time.monotonic() < deadline:
        await asyncio.sleep(quiet_s)
        now = workers.cpu()
        if "keeper" in now and math.isclose(sum(now.values()), sum(last.values())):
            return
        last = now


@contextlib.asynccontextmanager
async def agentic_worker(
    bench: Bench,
    processes: int = 1,
    profile_to: Path | None = None,
    env: Mapping[str, str] | None = None,
    timing_to: Path | None = None,
) -> AsyncIterator[WorkerProcs]:
    """`python -m pipeline.cli worker --app bench.apps:registry`, stopped with SIGTERM
    (and waited for) on the way out; `env` is added to worker_env(). Yields at once: the
    caller awaits its first result. `timing_to`: the worker's CPU by piece is written there
    (bench/harness/worker_timing.py)."""
    argv = [sys.executable]
    if profile_to is not None:  # the profile is written when the worker exits cleanly
        argv += ["-m", "cProfile", "-o", str(profile_to)]
    if timing_to is not None:
        argv += ["-m", "bench.harness.worker_timing", str(timing_to)]
    argv += ["-m", "pipeline.cli", "worker", "--app", WORKER_APP]
    argv += ["--concurrency", str(WORKER_CONCURRENCY), "--processes", str(processes)]
    fd, log_name = tempfile.mkstemp(prefix="bench-worker-", suffix=".log")
    spawn_ms = await server_ms(bench.admin)
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=ROOT,
            env=worker_env(bench, env),
            stdin=subprocess.DEVNULL,
            stdout=fd,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a group of its own, so a kill reaches its children
        )
    finally:
        os.close(fd)
    workers = WorkerProcs(proc, processes, spawn_ms, Path(log_name))
    try:
        yield workers
    except BaseException:
        print(f"worker log ({log_name}):\n{workers.log_tail()}", file=sys.stderr)
        raise
    finally:
        await workers.stop()
    if workers.returncode != 0:
        print(f"worker exited with {workers.returncode}:\n{workers.log_tail()}", file=sys.stderr)
    else:
        Path(log_name).unlink(missing_ok=True)
