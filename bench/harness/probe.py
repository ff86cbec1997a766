"""What a measured section cost: wall time, this process's CPU, and the server's CPU
and per-command counters (INFO cpu / commandstats), per task."""

from __future__ import annotations

import cProfile
import gc
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from redis.asyncio import Redis


@dataclass(frozen=True)
class ServerCounters:
    cpu_s: float
    commands: dict[str, tuple[int, int]]  # command -> (calls, usec), scripts' calls included

    def minus(self, start: ServerCounters) -> dict[str, tuple[int, int]]:
        delta = {}
        for name, (calls, usec) in self.commands.items():
            before = start.commands.get(name, (0, 0))
            if calls > before[0]:
                delta[name] = (calls - before[0], usec - before[1])
        return delta


async def server_counters(admin: Redis) -> ServerCounters:
    cpu = await admin.info("cpu")
    stats = await admin.info("commandstats")
    return ServerCounters(
        cpu_s=float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]),
        commands={
            name.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"]))
            for name, v in stats.items()
        },
    )


@dataclass(frozen=True)
class Cost:
    """Where the time of a measured section went, per task."""

    wall_us: float
    client_cpu_us: float
    server_cpu_us: float
    evalsha_per_task: float
    evalsha_usec_per_call: float
    commands: dict[str, dict[str, float]]  # per command: calls per task, usec per call

    def as_row(self) -> list[str]:
        return [
            f"{self.wall_us:,.1f}",
            f"{self.client_cpu_us:,.1f}",
            f"{self.server_cpu_us:,.1f}",
            f"{self.evalsha_per_task:.3g}",
            f"{self.evalsha_usec_per_call:,.1f}" if self.evalsha_per_task else "-",
        ]


class Probe:
    """Wall time, this process's CPU time and the server's CPU and command counters over
    one or more `async with` blocks (they add up); optionally profiled with cProfile."""

    def __init__(
        self, admin: Redis, profile_to: Path | None = None, *, collect: bool = True
    ) -> None:
        self.admin = admin
        self.profile_to = profile_to
        self.collect = collect  # gc.collect() on entry (not when others work meanwhile)
        self.wall_s = 0.0
        self.client_cpu_s = 0.0
        self.server_cpu_s = 0.0
        self.commands: dict[str, tuple[int, int]] = {}
        self._profiler = cProfile.Profile() if profile_to is not None else None
        self._start: ServerCounters | None = None
        self._t0 = self._cpu0 = 0.0

    async def __aenter__(self) -> Self:
        self._start = await server_counters(self.admin)
        if self.collect:
            gc.collect()
        if self._profiler is not None:
            self._profiler.enable()
        self._cpu0, self._t0 = time.process_time(), time.perf_counter()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.wall_s += time.perf_counter() - self._t0
        self.client_cpu_s += time.process_time() - self._cpu0
        if self._profiler is not None and self.profile_to is not None:
            self._profiler.disable()
            self._profiler.dump_stats(self.profile_to)
        end = await server_counters(self.admin)
        assert self._start is not None
        self.server_cpu_s += end.cpu_s - self._start.cpu_s
        for name, (calls, usec) in end.minus(self._start).items():
            before = self.commands.get(name, (0, 0))
            self.commands[name] = (before[0] + calls, before[1] + usec)

    def cost(
        self, tasks: int, wall_s: float | None = None, client_cpu_s: float | None = None
    ) -> Cost:
        """Per task; `client_cpu_s` replaces this process's CPU (e.g. with the workers')."""
        delta = {k: v for k, v in self.commands.items() if k != "info"}  # not the probe's
        calls, usec = delta.get("evalsha", (0, 0))
        client_cpu = self.client_cpu_s if client_cpu_s is None else client_cpu_s
        return Cost(
            wall_us=(self.wall_s if wall_s is None else wall_s) / tasks * 1e6,
            client_cpu_us=client_cpu / tasks * 1e6,
            server_cpu_us=self.server_cpu_s / tasks * 1e6,
            evalsha_per_task=calls / tasks,
            evalsha_usec_per_call=usec / calls if calls else 0.0,
            commands={
                name: {"calls_per_task": c / tasks, "usec_per_call": u / c}
                for name, (c, u) in sorted(delta.items())
            },
        )


async def used_memory(admin: Redis) -> int:
    return int((await admin.info("memory"))["used_memory"])


async def server_ms(admin: Redis) -> float:
    seconds, micros = await admin.time()
    return seconds * 1000 + micros / 1000
