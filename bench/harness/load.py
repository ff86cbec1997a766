"""How many CPUs other processes keep busy, before and during each scenario: the
machine may be shared, and that makes every number noisy."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from pathlib import Path

from bench.harness.processes import CLK_TCK, descendants, process_table


def cpu_ticks(irq: bool = True) -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs from /proc/stat; None off Linux. irq=False leaves
    out interrupt and softirq time (mostly the loopback traffic of this benchmark)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + fields[4]  # idle + iowait
    busy = sum(fields) - idle
    if not irq:
        busy -= fields[5] + fields[6]
    return busy, sum(fields)


async def busy_cpus(sample_s: float = 0.3) -> float | None:
    """How many CPUs other processes keep busy while this one sits idle."""
    start = cpu_ticks()
    await asyncio.sleep(sample_s)  # a sampling interval, not a wait for work
    end = cpu_ticks()
    if start is None or end is None or end[1] == start[1]:
        return None
    return round((end[0] - start[0]) / (end[1] - start[1]) * (os.cpu_count() or 1), 2)


@dataclass(frozen=True)
class LoadSample:
    ticks: tuple[int, int] | None  # cpu_ticks()
    own_cpu_s: float  # this process and everything it started (own_cpu_s())
    wall_s: float


def own_cpu_s() -> float:
    """CPU seconds of this process, of the children it reaped (with theirs), and of its
    live descendants: the private redis-server, worker processes and lease keepers."""
    t = os.times()
    total = t.user + t.system + t.children_user + t.children_system
    table = process_table()
    for pid in descendants(os.getpid(), table):
        if pid != os.getpid():
            total += table[pid][1] + table[pid][2]
    return total


def load_sample() -> LoadSample:
    return LoadSample(cpu_ticks(irq=False), own_cpu_s(), time.perf_counter())


def others_cpus(start: LoadSample, end: LoadSample) -> float | None:
    """How many CPUs processes this benchmark did not start kept busy between two samples
    (a Redis given by --redis-url counts as another process)."""
    if start.ticks is None or end.ticks is None or end.wall_s <= start.wall_s:
        return None
    busy_s = (end.ticks[0] - start.ticks[0]) / CLK_TCK
    others = max(0.0, busy_s - (end.own_cpu_s - start.own_cpu_s))
    return round(others / (end.wall_s - start.wall_s), 2)


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (None where the OS has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None
