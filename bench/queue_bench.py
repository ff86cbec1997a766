"""Throughput, latency and memory of RedisTaskQueue against raw redis-py baselines.

    .venv/bin/python bench/queue_bench.py            # or: make bench
    .venv/bin/python bench/queue_bench.py --quick --scenarios AE
    .venv/bin/python bench/queue_bench.py --scenarios C,D,E --profile-workers
    .venv/bin/python bench/queue_bench.py --redis-url redis://host:6379/0

Starts a private redis-server (no persistence) on a free port unless --redis-url is
given; then it uses a queue name of its own and deletes only keys matching
`agentic:{<queue>}:*` (the raw baselines write there too). Payloads are ~100 bytes of
JSON, task ids are uuid4().hex.

Baselines:  (a) LPUSH awaited one at a time   (b) LPUSH in pipelines of 1,000
Scenarios:  A  enqueue() one at a time         B  enqueue_many() in chunks of 1,000
            C0 seed loop: dequeue + complete_task, 10 coroutines, queue pre-filled
            C  one `agentic worker` process (--concurrency 10, no-op handler) drains
               pre-enqueued tasks; rate from the server-time completion scores
            D  the same with two worker processes (`agentic worker --processes 2`)
            E0 enqueue -> wait_for_result round trip, seed loop in a subprocess
            E  enqueue -> wait_for_result round trip, idle `agentic worker` subprocess
            F  used_memory per pending task (enqueue_many, no worker)

C, D and E run `python -m pipeline.cli worker --app bench.apps:registry` with
AGENTIC_REDIS_URL / AGENTIC_QUEUE_NAME set (other AGENTIC_* variables removed) and stop it
with SIGTERM. Prints a table with targets, a cost breakdown (client CPU, server CPU, EVALSHA
time per task), the worker processes' CPU per task, and writes everything as JSON to
bench/results/queue-bench-<timestamp>.json. --profile-workers runs the single-process
workers of C and E under cProfile and prints their top functions.

Load: the machine may be shared (2 cores here), so the report records the CPUs other
processes kept busy before each scenario (sampled while this one idles) and during it
(all busy time minus what this process and everything it started used), plus the load
average, and warns when either reaches a quarter of a CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import io
import json
import math
import os
import platform
import pstats
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
from redis.asyncio import Redis  # noqa: E402
from redis.utils import HIREDIS_AVAILABLE  # noqa: E402

from bench.apps import NOOP_TYPE  # noqa: E402
from bench.queue_worker import STOP_TYPE  # noqa: E402
from tests.support.redis_server import RedisServer  # noqa: E402
from utils.redis_queue import RedisTaskQueue  # noqa: E402

RESULTS_DIR = ROOT / "bench" / "results"
WORKER_SCRIPT = ROOT / "bench" / "queue_worker.py"
KEY_PREFIX = "agentic"
TASK_TYPE = NOOP_TYPE  # served by bench.apps:registry (C, D, E) and queue_worker.py (E0)
PAD = "x" * 80  # {"i":n,"data":"xx..."} is 96-101 bytes of JSON
ALL_SCENARIOS = ("A", "B", "C0", "C", "D", "E0", "E", "F")
WORKER_APP = "bench.apps:registry"
WORKER_CONCURRENCY = 10
WORKER_STOP_TIMEOUT = 30.0  # SIGTERM, then SIGKILL to the process group after this
WORKER_START_TIMEOUT = 60.0  # spawn -> first completion, on a loaded machine
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

# Targets: A as a ratio to baseline (a), B in tasks/s, C in tasks/s, D above C, E and E0 p50
# (and E p99) in ms, F in bytes per task.
TARGET_A_RATIO = 0.8
TARGET_B_RATE = 50_000.0
TARGET_C_RATE = 10_000.0
TARGET_E_P50_MS = 1.5
TARGET_E_P99_MS = 5.0
TARGET_F_BYTES = 500.0


@dataclass(frozen=True)
class Sizes:
    raw_single: int  # (a) LPUSH commands awaited one at a time
    raw_pipelined: int  # (b) LPUSH commands, in pipelines of `chunk`
    enqueue_one: int  # A
    enqueue_many: int  # B
    drain: int  # C0
    round_trips: int  # E0 and E
    warmup: int  # E0/E warm-up trips, and warm-up calls before A and (a)
    memory: int  # F
    worker_drain: int  # C and D: tasks pre-enqueued for the `agentic worker` processes
    chunk: int = 1_000
    workers: int = 10


FULL = Sizes(10_000, 100_000, 10_000, 50_000, 20_000, 1_000, 50, 100_000, 20_000)
QUICK = Sizes(500, 5_000, 500, 5_000, 1_000, 100, 10, 5_000, 2_000)


# -- payloads and helpers --------------------------------------------------------------


def payload(i: int) -> dict[str, Any]:
    return {"i": i, "data": PAD}


def payload_bytes(i: int) -> bytes:
    return json.dumps(payload(i), separators=(",", ":")).encode()


def task_dicts(n: int) -> list[dict[str, Any]]:
    """enqueue_many() input: n no-op tasks with uuid4().hex ids."""
    return [
        {"task_id": uuid.uuid4().hex, "task_type": TASK_TYPE, "payload": payload(i)}
        for i in range(n)
    ]


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0-100)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def pattern_of(queue_name: str) -> str:
    return f"{KEY_PREFIX}:{{{queue_name}}}:*"


async def clear_keys(admin: Redis, queue_name: str) -> int:
    """Delete this benchmark's keys (SCAN MATCH agentic:{<queue>}:*); never FLUSHALL."""
    deleted = 0
    batch: list[bytes] = []
    async for key in admin.scan_iter(match=pattern_of(queue_name), count=1_000):
        batch.append(key)
        if len(batch) >= 1_000:
            deleted += await admin.delete(*batch)
            batch.clear()
    if batch:
        deleted += await admin.delete(*batch)
    return deleted


async def used_memory(admin: Redis) -> int:
    return int((await admin.info("memory"))["used_memory"])


# -- measuring -------------------------------------------------------------------------


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


@dataclass
class Row:
    """One line of the results table; `data` goes to the JSON file only."""

    key: str
    name: str
    measured: str
    baseline: str = "-"
    ratio: str = "-"
    target: str = "-"
    hit: bool | None = None
    cost: Cost | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def cells(self) -> list[str]:
        verdict = "-" if self.hit is None else ("hit" if self.hit else "MISS")
        return [self.key, self.name, self.measured, self.baseline, self.ratio, self.target, verdict]


@dataclass
class Bench:
    """Everything a scenario needs."""

    url: str
    admin: Redis
    queue_name: str
    sizes: Sizes
    profile_dir: Path | None
    baselines: dict[str, Row] = field(default_factory=dict)
    rows: dict[str, Row] = field(default_factory=dict)  # scenarios run so far (D needs C)
    worker_profile_dir: Path | None = None  # --profile-workers: cProfile the workers here

    def queue(self) -> RedisTaskQueue:
        return RedisTaskQueue(queue_name=self.queue_name, redis_url=self.url)

    def raw_key(self, name: str) -> str:
        return f"{KEY_PREFIX}:{{{self.queue_name}}}:bench-raw:{name}"

    def worker_profile(self, scenario: str) -> Path | None:
        if self.worker_profile_dir is None:
            return None
        return self.worker_profile_dir / f"worker-{scenario}.prof"

    def probe(self, scenario: str) -> Probe:
        path = None
        if self.profile_dir is not None:
            path = self.profile_dir / f"profile-{scenario}.prof"
        return Probe(self.admin, path)

    @property
    def raw_rate(self) -> float:
        return float(self.baselines["a"].data["ops_per_s"])

    @property
    def raw_p50_ms(self) -> float:
        return float(self.baselines["a"].data["p50_ms"])

    @property
    def raw_pipelined_rate(self) -> float:
        return float(self.baselines["b"].data["ops_per_s"])


def fmt_rate(rate: float, unit: str) -> str:
    return f"{rate:,.0f} {unit}/s"


# -- raw baselines ---------------------------------------------------------------------


async def baseline_single(bench: Bench, client: Redis) -> Row:
    key = bench.raw_key("single")
    data = [payload_bytes(i) for i in range(bench.sizes.raw_single)]
    for item in data[: bench.sizes.warmup]:
        await client.lpush(key, item)
    latencies: list[float] = []
    async with bench.probe("a") as probe:
        for item in data:
            t0 = time.perf_counter()
            await client.lpush(key, item)
            latencies.append(time.perf_counter() - t0)
    await client.delete(key)
    rate = len(data) / probe.wall_s
    p50, p99 = percentile(latencies, 50) * 1e3, percentile(latencies, 99) * 1e3
    return Row(
        key="a",
        name="raw LPUSH, awaited one at a time",
        measured=f"{fmt_rate(rate, 'ops')}; p50 {p50:.3f} ms, p99 {p99:.3f} ms",
        cost=probe.cost(len(data)),
        data={"n": len(data), "ops_per_s": rate, "p50_ms": p50, "p99_ms": p99},
    )


async def baseline_pipelined(bench: Bench, client: Redis) -> Row:
    key = bench.raw_key("pipelined")
    data = [payload_bytes(i) for i in range(bench.sizes.raw_pipelined)]
    async with bench.probe("b") as probe:
        for chunk in chunks(data, bench.sizes.chunk):
            async with client.pipeline(transaction=False) as pipe:
                for item in chunk:
                    pipe.lpush(key, item)
                await pipe.execute()
    await client.delete(key)
    rate = len(data) / probe.wall_s
    return Row(
        key="b",
        name=f"raw LPUSH, pipelines of {bench.sizes.chunk:,}",
        measured=fmt_rate(rate, "ops"),
        cost=probe.cost(len(data)),
        data={"n": len(data), "ops_per_s": rate},
    )


async def run_baselines(bench: Bench) -> list[Row]:
    client = Redis.from_url(bench.url)
    try:
        rows = [await baseline_single(bench, client), await baseline_pipelined(bench, client)]
    finally:
        await client.aclose()
    bench.baselines = {row.key: row for row in rows}
    return rows


# -- scenarios -------------------------------------------------------------------------


async def warm_up(bench: Bench, queue: RedisTaskQueue) -> None:
    """Load the scripts and open the connections, then forget the warm-up tasks."""
    for spec in task_dicts(bench.sizes.warmup):
        await queue.enqueue(spec["task_id"], TASK_TYPE, spec["payload"])
    await clear_keys(bench.admin, bench.queue_name)


async def lpush_each(client: Redis, key: str, items: Sequence[bytes]) -> None:
    for item in items:
        await client.lpush(key, item)


async def enqueue_each(
    queue: RedisTaskQueue, specs: Sequence[dict[str, Any]], latencies: list[float]
) -> None:
    for spec in specs:
        t0 = time.perf_counter()
        await queue.enqueue(spec["task_id"], TASK_TYPE, spec["payload"])
        latencies.append(time.perf_counter() - t0)


async def scenario_a(bench: Bench) -> Row:
    """enqueue() one at a time, in blocks that alternate with blocks of raw LPUSH, so the
    ratio compares both under the same machine load (baseline (a) ran minutes before)."""
    specs = task_dicts(bench.sizes.enqueue_one)
    raw = [payload_bytes(i) for i in range(len(specs))]
    block = max(1, len(specs) // 10)
    latencies: list[float] = []
    probe, raw_probe = bench.probe("A"), Probe(bench.admin)
    client = Redis.from_url(bench.url)
    try:
        async with bench.queue() as queue:
            await warm_up(bench, queue)
            for specs_block, raw_block in zip(
                chunks(specs, block), chunks(raw, block), strict=True
            ):
                async with raw_probe:
                    await lpush_each(client, bench.raw_key("paired"), raw_block)
                async with probe:
                    await enqueue_each(queue, specs_block, latencies)
    finally:
        await client.aclose()
    rate, raw_rate = len(specs) / probe.wall_s, len(raw) / raw_probe.wall_s
    ratio = rate / raw_rate
    p50, p99 = percentile(latencies, 50) * 1e3, percentile(latencies, 99) * 1e3
    return Row(
        key="A",
        name="enqueue(), awaited one at a time",
        measured=f"{fmt_rate(rate, 'tasks')}; p50 {p50:.3f} ms, p99 {p99:.3f} ms",
        baseline=f"(a) interleaved {fmt_rate(raw_rate, 'ops')}",
        ratio=f"{ratio:.2f}x",
        target=f">= {TARGET_A_RATIO}x (a)",
        hit=ratio >= TARGET_A_RATIO,
        cost=probe.cost(len(specs)),
        data={
            "n": len(specs),
            "tasks_per_s": rate,
            "ratio": ratio,
            "p50_ms": p50,
            "p99_ms": p99,
            "raw_interleaved_ops_per_s": raw_rate,
            "ratio_to_standalone_a": rate / bench.raw_rate,
        },
    )


async def scenario_b(bench: Bench) -> Row:
    specs = task_dicts(bench.sizes.enqueue_many)
    latencies: list[float] = []
    async with bench.queue() as queue:
        await warm_up(bench, queue)
        async with bench.probe("B") as probe:
            for chunk in chunks(specs, bench.sizes.chunk):
                t0 = time.perf_counter()
                await queue.enqueue_many(chunk)
                latencies.append(time.perf_counter() - t0)
    rate = len(specs) / probe.wall_s
    ratio = rate / bench.raw_pipelined_rate
    p50 = percentile(latencies, 50) * 1e3
    return Row(
        key="B",
        name=f"enqueue_many(), chunks of {bench.sizes.chunk:,}",
        measured=f"{fmt_rate(rate, 'tasks')}; {p50:.1f} ms per chunk (p50)",
        baseline=f"(b) {fmt_rate(bench.raw_pipelined_rate, 'ops')}",
        ratio=f"{ratio:.2f}x",
        target=f">= {TARGET_B_RATE:,.0f} tasks/s",
        hit=rate >= TARGET_B_RATE,
        cost=probe.cost(len(specs)),
        data={"n": len(specs), "tasks_per_s": rate, "ratio": ratio, "chunk_p50_ms": p50},
    )


async def drain(queue: RedisTaskQueue, workers: int) -> tuple[int, float]:
    """The seed loop in `workers` coroutines until dequeue() times out. Returns the tasks
    completed and the perf_counter time of the last completion."""
    done = 0
    last = time.perf_counter()

    async def worker(worker_id: str) -> None:
        nonlocal done, last
        while True:
            task = await queue.dequeue(worker_id, timeout=1.0)
            if task is None:
                return
            await queue.complete_task(task.task_id, {"ok": True})
            done += 1
            last = time.perf_counter()

    await asyncio.gather(*(worker(f"bench-w{i}") for i in range(workers)))
    return done, last


async def scenario_c0(bench: Bench) -> Row:
    n, workers = bench.sizes.drain, bench.sizes.workers
    async with bench.queue() as queue:
        await warm_up(bench, queue)
        for chunk in chunks(task_dicts(n), bench.sizes.chunk):
            await queue.enqueue_many(chunk)
        async with bench.probe("C0") as probe:
            start = time.perf_counter()
            done, last = await drain(queue, workers)
    if done != n:
        raise RuntimeError(f"scenario C0 completed {done} of {n} tasks")
    elapsed = last - start  # excludes the final 1 s dequeue timeout of idle workers
    rate = n / elapsed
    ratio = rate / bench.raw_rate
    return Row(
        key="C0",
        name=f"seed loop: dequeue()+complete_task(), {workers} coroutines",
        measured=fmt_rate(rate, "tasks"),
        baseline=f"(a) {fmt_rate(bench.raw_rate, 'ops')}",
        ratio=f"{ratio:.2f}x",
        target="print only",
        cost=probe.cost(n, elapsed),
        data={"n": n, "workers": workers, "tasks_per_s": rate, "ratio": ratio},
    )


@contextlib.asynccontextmanager
async def worker_process(bench: Bench) -> AsyncIterator[asyncio.subprocess.Process]:
    """bench/queue_worker.py (the seed loop, for E0) on the benchmark's queue, ready when
    this yields."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(WORKER_SCRIPT),
        "--redis-url",
        bench.url,
        "--queue",
        bench.queue_name,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
        if line.strip() != b"ready":
            raise RuntimeError(f"worker did not start: {line!r}")
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def stop_worker(queue: RedisTaskQueue, proc: asyncio.subprocess.Process) -> None:
    stop_id = uuid.uuid4().hex
    await queue.enqueue(stop_id, STOP_TYPE, {})
    await queue.wait_for_result(stop_id, timeout=10)
    await asyncio.wait_for(proc.wait(), timeout=10)


async def round_trip(
    queue: RedisTaskQueue, i: int, expected: Any = None, timeout: float = 5.0
) -> tuple[float, float]:
    """One enqueue -> wait_for_result trip; returns (enqueue seconds, total seconds)."""
    task_id = uuid.uuid4().hex
    t0 = time.perf_counter()
    await queue.enqueue(task_id, TASK_TYPE, payload(i))
    t1 = time.perf_counter()
    result = await queue.wait_for_result(task_id, timeout=timeout)
    t2 = time.perf_counter()
    if result != expected:
        raise RuntimeError(f"unexpected result {result!r}")
    return t1 - t0, t2 - t0


async def scenario_e0(bench: Bench) -> Row:
    n = bench.sizes.round_trips
    totals: list[float] = []
    enqueues: list[float] = []
    seed_result = {"ok": True}
    async with bench.queue() as queue, worker_process(bench) as proc:
        for i in range(bench.sizes.warmup):
            await round_trip(queue, i, seed_result)
        async with bench.probe("E0") as probe:
            for i in range(n):
                enqueue_s, total_s = await round_trip(queue, i, seed_result)
                enqueues.append(enqueue_s)
                totals.append(total_s)
        await stop_worker(queue, proc)
    p50, p99 = percentile(totals, 50) * 1e3, percentile(totals, 99) * 1e3
    enqueue_p50 = percentile(enqueues, 50) * 1e3
    ratio = p50 / bench.raw_p50_ms
    return Row(
        key="E0",
        name="seed loop: enqueue -> wait_for_result (process)",
        measured=f"p50 {p50:.3f} ms, p99 {p99:.3f} ms",
        baseline=f"(a) one command p50 {bench.raw_p50_ms:.3f} ms",
        ratio=f"{ratio:.1f}x",
        target=f"p50 <= {TARGET_E_P50_MS} ms",
        hit=p50 <= TARGET_E_P50_MS,
        cost=probe.cost(n),
        data={
            "n": n,
            "warmup": bench.sizes.warmup,
            "p50_ms": p50,
            "p99_ms": p99,
            "enqueue_p50_ms": enqueue_p50,
            "trips_per_s": n / probe.wall_s,
            "ratio_to_raw_p50": ratio,
        },
    )


# -- worker runtime: `agentic worker` subprocesses (C, D, E) ---------------------------


def worker_env(bench: Bench) -> dict[str, str]:
    """`agentic worker`'s environment: this benchmark's Redis and queue, and none of the
    caller's other AGENTIC_* settings (a lease or retry override would change what is
    measured). A `.env` file in the repository root would still apply."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTIC_")}
    env["AGENTIC_REDIS_URL"] = bench.url
    env["AGENTIC_QUEUE_NAME"] = bench.queue_name
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
    if b"lease_keeper" in cmdline:
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


async def server_ms(admin: Redis) -> float:
    seconds, micros = await admin.time()
    return seconds * 1000 + micros / 1000


@contextlib.asynccontextmanager
async def agentic_worker(
    bench: Bench, processes: int = 1, profile_to: Path | None = None
) -> AsyncIterator[WorkerProcs]:
    """`python -m pipeline.cli worker --app bench.apps:registry`, stopped with SIGTERM
    (and waited for) on the way out. Yields at once: the caller awaits its first result."""
    argv = [sys.executable]
    if profile_to is not None:  # the profile is written when the worker exits cleanly
        argv += ["-m", "cProfile", "-o", str(profile_to)]
    argv += ["-m", "pipeline.cli", "worker", "--app", WORKER_APP]
    argv += ["--concurrency", str(WORKER_CONCURRENCY), "--processes", str(processes)]
    fd, log_name = tempfile.mkstemp(prefix="bench-worker-", suffix=".log")
    spawn_ms = await server_ms(bench.admin)
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=ROOT,
            env=worker_env(bench),
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


async def wait_until_completed(
    bench: Bench, queue: RedisTaskQueue, last_id: str, n: int, timeout: float
) -> None:
    """Until all n tasks are completed: block in Redis on the last task's result, then
    poll ZCARD every 50 ms for the few that were still running then (at most the
    workers' slots). Benchmark-driver polling of a short tail only; the rate is taken
    from server-side completion times, so the polling period does not enter it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    await queue.wait_for_result(last_id, timeout=timeout)
    while await bench.admin.zcard(queue.keys.completed) < n:
        if loop.time() > deadline:
            sizes = await queue.get_queue_size()
            raise RuntimeError(f"{n} tasks not completed after {timeout} s: {sizes}")
        await asyncio.sleep(0.05)


async def completion_times(bench: Bench, queue: RedisTaskQueue) -> tuple[int, float, float]:
    """(count, first, last) completion times in ms (Redis server time): the scores of the
    queue's `completed` set, written by complete.lua."""
    key = queue.keys.completed
    async with bench.admin.pipeline(transaction=False) as pipe:
        pipe.zcard(key)
        pipe.zrange(key, 0, 0, withscores=True)
        pipe.zrange(key, -1, -1, withscores=True)
        count, first, last = await pipe.execute()
    return int(count), float(first[0][1]), float(last[0][1])


def per_task_us(cpu: dict[str, float], tasks: int) -> dict[str, float]:
    return {role: seconds / tasks * 1e6 for role, seconds in cpu.items()}


async def worker_drain(bench: Bench, key: str, processes: int) -> Row:
    """C and D: `processes` worker processes drain n pre-enqueued no-op tasks."""
    n = bench.sizes.worker_drain
    specs = task_dicts(n)
    first_id, last_id = specs[0]["task_id"], specs[-1]["task_id"]
    probe = Probe(bench.admin, collect=False)
    profile_to = bench.worker_profile(key) if processes == 1 else None
    async with bench.queue() as queue:
        await warm_up(bench, queue)
        for chunk in chunks(specs, bench.sizes.chunk):
            await queue.enqueue_many(chunk)
        gc.collect()
        async with agentic_worker(bench, processes, profile_to) as workers:
            # The first task enqueued is claimed first: its result marks the end of start-up.
            await queue.wait_for_result(first_id, timeout=WORKER_START_TIMEOUT)
            cpu0 = workers.cpu()
            async with probe:
                done0 = await bench.admin.zcard(queue.keys.completed)
                await wait_until_completed(bench, queue, last_id, n, timeout=120 + n / 100)
            cpu1 = workers.cpu()
        count, first_ms, last_ms = await completion_times(bench, queue)
        sizes = await queue.get_queue_size()
    if count != n or sizes["completed"] != n:
        raise RuntimeError(f"scenario {key}: {count} of {n} tasks completed: {sizes}")
    span_s = (last_ms - first_ms) / 1000
    rate = (n - 1) / span_s if span_s > 0 else math.inf
    startup_ms = first_ms - workers.spawn_ms
    rate_incl = n / ((last_ms - workers.spawn_ms) / 1000)
    window = max(1, n - done0)
    cpu = cpu_delta(cpu0, cpu1)
    ratio = rate / bench.raw_rate
    label = (
        "one `agentic worker` process"
        if processes == 1
        else f"{processes} worker processes (--processes {processes})"
    )
    if processes == 1:
        target, hit = f">= {TARGET_C_RATE:,.0f} tasks/s", rate >= TARGET_C_RATE
    elif "C" in bench.rows:
        c_rate = float(bench.rows["C"].data["tasks_per_s"])
        target, hit = f"> C ({c_rate:,.0f} tasks/s)", rate > c_rate
    else:
        target, hit = "> C (C not run)", None
    return Row(
        key=key,
        name=f"{label}, --concurrency {WORKER_CONCURRENCY}, no-op",
        measured=(
            f"{fmt_rate(rate, 'tasks')}; start-up {startup_ms:,.0f} ms, "
            f"{fmt_rate(rate_incl, 'tasks')} with it"
        ),
        baseline=f"(a) {fmt_rate(bench.raw_rate, 'ops')}",
        ratio=f"{ratio:.2f}x",
        target=target,
        hit=hit,
        cost=probe.cost(window, window / rate, sum(cpu.values())),
        data={
            "n": n,
            "processes": processes,
            "concurrency": WORKER_CONCURRENCY,
            "tasks_per_s": rate,
            "ratio": ratio,
            "first_to_last_ms": last_ms - first_ms,
            "startup_ms": startup_ms,
            "tasks_per_s_with_startup": rate_incl,
            "cpu_window_tasks": window,
            "process_cpu_us_per_task": per_task_us(cpu, window),
            "worker_exit": workers.returncode,
            "worker_stop_s": workers.stop_s,
            "worker_profile": str(profile_to) if profile_to else None,
        },
    )


async def scenario_c(bench: Bench) -> Row:
    return await worker_drain(bench, "C", processes=1)


async def scenario_d(bench: Bench) -> Row:
    return await worker_drain(bench, "D", processes=2)


async def scenario_e(bench: Bench) -> Row:
    """Sequential enqueue -> wait_for_result trips through an idle `agentic worker`."""
    n = bench.sizes.round_trips
    totals: list[float] = []
    enqueues: list[float] = []
    profile_to = bench.worker_profile("E")
    async with bench.queue() as queue:
        await warm_up(bench, queue)
        async with agentic_worker(bench, 1, profile_to) as workers:
            # The first warm-up trip also waits for the worker to start.
            await round_trip(queue, 0, timeout=WORKER_START_TIMEOUT)
            for i in range(1, bench.sizes.warmup):
                await round_trip(queue, i)
            await until_quiet(workers)  # the trips then compete with no start-up work
            cpu0 = workers.cpu()
            async with bench.probe("E") as probe:
                for i in range(n):
                    enqueue_s, total_s = await round_trip(queue, i)
                    enqueues.append(enqueue_s)
                    totals.append(total_s)
            cpu1 = workers.cpu()
    cpu = cpu_delta(cpu0, cpu1)
    p50, p99 = percentile(totals, 50) * 1e3, percentile(totals, 99) * 1e3
    ratio = p50 / bench.raw_p50_ms
    return Row(
        key="E",
        name="enqueue -> wait_for_result via `agentic worker`",
        measured=f"p50 {p50:.3f} ms, p99 {p99:.3f} ms",
        baseline=f"(a) one command p50 {bench.raw_p50_ms:.3f} ms",
        ratio=f"{ratio:.1f}x",
        target=f"p50 <= {TARGET_E_P50_MS} ms, p99 <= {TARGET_E_P99_MS:g} ms",
        hit=p50 <= TARGET_E_P50_MS and p99 <= TARGET_E_P99_MS,
        cost=probe.cost(n, client_cpu_s=probe.client_cpu_s + sum(cpu.values())),
        data={
            "n": n,
            "warmup": bench.sizes.warmup,
            "p50_ms": p50,
            "p90_ms": percentile(totals, 90) * 1e3,
            "p99_ms": p99,
            "max_ms": max(totals) * 1e3,
            "enqueue_p50_ms": percentile(enqueues, 50) * 1e3,
            "trips_per_s": n / probe.wall_s,
            "ratio_to_raw_p50": ratio,
            "process_cpu_us_per_task": {
                "driver": probe.client_cpu_s / n * 1e6,
                **per_task_us(cpu, n),
            },
            "worker_exit": workers.returncode,
            "worker_stop_s": workers.stop_s,
            "worker_profile": str(profile_to) if profile_to else None,
        },
    )


async def memory_delta(bench: Bench, fill: Callable[[], Awaitable[None]]) -> float:
    """used_memory growth in bytes while `fill()` runs; the keys are deleted after."""
    gc.collect()
    before = await used_memory(bench.admin)
    await fill()
    after = await used_memory(bench.admin)
    await clear_keys(bench.admin, bench.queue_name)
    return float(after - before)


async def plain_lpush(bench: Bench, data: list[bytes]) -> None:
    key = bench.raw_key("memory")
    for chunk in chunks(data, bench.sizes.chunk):
        async with bench.admin.pipeline(transaction=False) as pipe:
            pipe.lpush(key, *chunk)
            await pipe.execute()


async def string_per_task(bench: Bench, specs: list[dict[str, Any]]) -> None:
    """arq's layout, as a lean id-addressable floor: SET <job key> <payload> + ZADD <id>."""
    zkey = bench.raw_key("pending")
    for chunk in chunks(specs, bench.sizes.chunk):
        async with bench.admin.pipeline(transaction=False) as pipe:
            for i, spec in enumerate(chunk):
                body = json.dumps(spec["payload"], separators=(",", ":"))
                pipe.set(bench.raw_key(f"task:{spec['task_id']}"), body)
                pipe.zadd(zkey, {spec["task_id"]: i})
            await pipe.execute()


async def sample_task_usage(bench: Bench, queue: RedisTaskQueue) -> dict[str, Any]:
    """MEMORY USAGE of one task hash and its fields, for the report."""
    pending = await queue.list_tasks("pending", limit=1)
    if not pending:
        return {}
    key = queue.keys.task(pending[0].task_id)
    fields = await bench.admin.hgetall(key)
    return {
        "task_hash_bytes": await bench.admin.memory_usage(key, samples=0),
        "task_hash_fields": len(fields),
        "task_hash_encoding": (await bench.admin.object("encoding", key)).decode(),
        "pending_zset_bytes": await bench.admin.memory_usage(
            queue.keys.pending(TASK_TYPE), samples=0
        ),
    }


async def scenario_f(bench: Bench) -> Row:
    n = bench.sizes.memory
    specs = task_dicts(n)
    sample: dict[str, Any] = {}
    async with bench.queue() as queue:
        await warm_up(bench, queue)

        async def fill_queue() -> None:
            for chunk in chunks(specs, bench.sizes.chunk):
                await queue.enqueue_many(chunk)
            sample.update(await sample_task_usage(bench, queue))

        engine = await memory_delta(bench, fill_queue) / n
    raw = [payload_bytes(i) for i in range(n)]
    floor = await memory_delta(bench, lambda: plain_lpush(bench, raw)) / n
    keyed = await memory_delta(bench, lambda: string_per_task(bench, specs)) / n
    if sample.get("pending_zset_bytes"):
        sample["pending_zset_bytes_per_task"] = sample["pending_zset_bytes"] / n
    return Row(
        key="F",
        name="used_memory per pending task",
        measured=f"{engine:,.0f} B/task",
        baseline=f"LPUSH {floor:,.0f} B; SET+ZADD {keyed:,.0f} B",
        ratio=f"{engine / floor:.1f}x",
        target=f"<= {TARGET_F_BYTES:,.0f} B",
        hit=engine <= TARGET_F_BYTES,
        data={
            "n": n,
            "bytes_per_task": engine,
            "lpush_floor_bytes": floor,
            "set_zadd_floor_bytes": keyed,
            **sample,
        },
    )


SCENARIOS: dict[str, Callable[[Bench], Awaitable[Row]]] = {
    "A": scenario_a,
    "B": scenario_b,
    "C0": scenario_c0,
    "C": scenario_c,
    "D": scenario_d,
    "E0": scenario_e0,
    "E": scenario_e,
    "F": scenario_f,
}


# -- reporting -------------------------------------------------------------------------


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    rule = "-+-".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def results_table(rows: list[Row]) -> str:
    headers = ["", "scenario", "measured", "baseline", "ratio", "target", "result"]
    return table(headers, [r.cells() for r in rows])


def cost_table(rows: list[Row]) -> str:
    headers = [
        "",
        "wall us/task",
        "client CPU us/task",
        "server CPU us/task",
        "EVALSHA/task",
        "EVALSHA us/call",
    ]
    body = [[r.key, *r.cost.as_row()] for r in rows if r.cost is not None]
    return table(headers, body)


def profile_summary(path: Path, limit: int = 15, sort: str = "tottime") -> str:
    out = io.StringIO()
    stats = pstats.Stats(str(path), stream=out)
    stats.sort_stats(sort).print_stats(limit)
    return out.getvalue()


def process_table_text(rows: list[Row]) -> str:
    roles = ["driver", "worker", "keeper", "supervisor"]
    headers = ["", *(f"{r} CPU" for r in roles), "start-up ms", "rate with start-up", "exit"]
    body = []
    for row in rows:
        cpu = row.data["process_cpu_us_per_task"]
        startup = row.data.get("startup_ms")
        with_startup = row.data.get("tasks_per_s_with_startup")
        body.append(
            [
                row.key,
                *(f"{cpu[r]:,.1f}" if r in cpu else "-" for r in roles),
                "-" if startup is None else f"{startup:,.0f}",
                "-" if with_startup is None else fmt_rate(with_startup, "tasks"),
                str(row.data.get("worker_exit")),
            ]
        )
    return table(headers, body)


def command_summary(row: Row) -> str:
    """Redis commands per task, most time first: name calls/task x usec/call."""
    if row.cost is None:
        return "-"
    by_time = sorted(
        row.cost.commands.items(),
        key=lambda item: item[1]["calls_per_task"] * item[1]["usec_per_call"],
        reverse=True,
    )
    return ", ".join(
        f"{name} {c['calls_per_task']:.3g} x {c['usec_per_call']:.1f} us"
        for name, c in by_time
        if c["calls_per_task"] >= 0.001
    )


def git_state() -> str:
    """The commit measured, with "+dirty" when the engine has uncommitted changes."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "utils"],
            capture_output=True,
            text=True,
            cwd=ROOT,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return f"{commit or 'unknown'}{'+dirty' if dirty else ''}"


async def environment(bench: Bench, own_server: bool) -> dict[str, Any]:
    server = await bench.admin.info("server")
    return {
        "redis_server": f"{server.get('redis_version')} ({server.get('redis_mode', '')})",
        "own_server": own_server,
        "redis_py": redis.__version__,
        "hiredis": HIREDIS_AVAILABLE,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "queue_name": bench.queue_name,
        "git": git_state(),
    }


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


def busy_warning(env: dict[str, Any]) -> str | None:
    """Other processes competing for the CPUs make every number here noisy."""
    samples = [*env["busy_cpus"].values(), *env["others_cpus"].values()]
    busy = max((b for b in samples if b is not None), default=0.0)
    if busy < 0.25:
        return None
    return (
        f"WARNING: other processes kept up to {busy:.2f} of {env['cpus']} CPUs busy; "
        "the numbers are noisy, rerun on an idle machine"
    )


def write_json(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")


def report_dict(env: dict[str, Any], sizes: Sizes, rows: list[Row]) -> dict[str, Any]:
    return {
        "created": datetime.now().isoformat(timespec="seconds"),
        "argv": sys.argv[1:],
        "environment": env,
        "sizes": asdict(sizes),
        "results": {
            r.key: {
                "name": r.name,
                "measured": r.measured,
                "target": r.target,
                "hit": r.hit,
                "cost_per_task": asdict(r.cost) if r.cost else None,
                **r.data,
            }
            for r in rows
        },
    }


# -- main ------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", help="use this Redis instead of a private server")
    parser.add_argument("--quick", action="store_true", help="small N, for a smoke run")
    parser.add_argument(
        "--scenarios",
        default=",".join(ALL_SCENARIOS),
        help=f"subset of {','.join(ALL_SCENARIOS)} (e.g. AE, C0,E0 or CDE)",
    )
    parser.add_argument("--json", type=Path, help="results file (default: bench/results/)")
    parser.add_argument(
        "--profile", action="store_true", help="cProfile each measured section (slower!)"
    )
    parser.add_argument(
        "--profile-workers",
        action="store_true",
        help="run the single-process workers of C and E under cProfile (slower!)",
    )
    args = parser.parse_args(argv)
    scenarios = parse_scenarios(args.scenarios)
    if scenarios is None:
        parser.error(f"--scenarios takes {','.join(ALL_SCENARIOS)}, got {args.scenarios!r}")
    args.scenarios = scenarios
    return args


def parse_scenarios(text: str) -> list[str] | None:
    """Scenario keys in run order from "AC0E", "A,C0,E" or "c0 e0"; None if invalid."""
    compact = re.sub(r"[\s,]", "", text.upper())
    if not compact or not re.fullmatch(r"(?:[A-Z]0?)+", compact):
        return None
    wanted = set(re.findall(r"[A-Z]0?", compact))
    if wanted - set(ALL_SCENARIOS):
        return None
    return [key for key in ALL_SCENARIOS if key in wanted]


@contextlib.contextmanager
def redis_target(url: str | None) -> Iterator[tuple[str, bool]]:
    """(url, own_server): the given URL, or a private no-persistence redis-server."""
    if url:
        yield url, False
        return
    server = RedisServer("--save", "", "--appendonly", "no")
    server.start()
    try:
        yield server.url, True
    finally:
        server.cleanup()


async def run_all(args: argparse.Namespace, url: str, own_server: bool, stamp: str) -> int:
    sizes = QUICK if args.quick else FULL
    queue_name = "bench" if own_server else f"bench-{uuid.uuid4().hex[:10]}"
    profile_dir = RESULTS_DIR / f"profile-{stamp}" if args.profile else None
    worker_profile_dir = RESULTS_DIR / f"profile-{stamp}" if args.profile_workers else None
    for directory in (profile_dir, worker_profile_dir):
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
    admin = Redis.from_url(url)
    bench = Bench(url, admin, queue_name, sizes, profile_dir)
    bench.worker_profile_dir = worker_profile_dir
    try:
        await clear_keys(admin, queue_name)
        env = await environment(bench, own_server)
        print(f"queue_bench: {env}", flush=True)
        busy = env["busy_cpus"] = {"ab": await busy_cpus()}  # before each, all idle here
        others = env["others_cpus"] = {}  # during each: busy CPUs minus what ours used
        load = env["loadavg"] = {"start": load_average()}
        sample = load_sample()
        rows = await run_baselines(bench)
        others["ab"] = others_cpus(sample, load_sample())
        for key in args.scenarios:
            busy[key] = await busy_cpus()
            print(f"running {key} ...", flush=True)
            sample = load_sample()
            row = await SCENARIOS[key](bench)
            others[key] = others_cpus(sample, load_sample())
            bench.rows[key] = row
            rows.append(row)
            await clear_keys(admin, queue_name)
    finally:
        await clear_keys(admin, queue_name)
        await admin.aclose()
    busy["end"] = await busy_cpus()
    load["end"] = load_average()
    print_report(rows, args, sizes, env, profile_dir)
    out = args.json or RESULTS_DIR / f"queue-bench-{stamp}.json"
    write_json(out, report_dict(env, sizes, rows))
    print(f"\nresults: {out}")
    return 0


def print_report(
    rows: list[Row],
    args: argparse.Namespace,
    sizes: Sizes,
    env: dict[str, Any],
    profile_dir: Path | None,
) -> None:
    mode = "quick" if args.quick else "full"
    print(f"\nqueue benchmark ({mode}; Redis {env['redis_server']}, hiredis {env['hiredis']})")
    print(f"sizes: {asdict(sizes)}; git {env['git']}")
    print(f"load average (1/5/15 min): {env['loadavg']}")
    print(f"CPUs busy with other processes before each scenario: {env['busy_cpus']}")
    print(f"CPUs busy with other processes during each scenario: {env['others_cpus']}")
    warning = busy_warning(env)
    if warning:
        print(warning)
    print(results_table(rows))
    print("\nC0: each task costs 2 script round trips (claim + complete) and 10 run at once.")
    print("C/D: rate = (N-1) / (last - first completion), from the `completed` set's server-time")
    print("   scores, so start-up (spawn -> first completion) is excluded; shown apart.")
    print("E0/E: the critical path is enqueue, BLPOP wake-up, claim, complete, BLMOVE, HGETALL.")
    print("\nwhere the time goes (per task; server CPU = INFO cpu delta, EVALSHA = Lua):")
    print(cost_table(rows))
    print("client CPU: A, B, C0, E0 this process only; C, D the worker processes (worker,")
    print("lease keeper, supervisor); E this process plus the worker processes.")
    worker_rows = [r for r in rows if "process_cpu_us_per_task" in r.data]
    if worker_rows:
        print("\nworker processes (CPU us per task from /proc; C/D between first and last")
        print("completion, E over the measured trips) and Redis commands per task:")
        print(process_table_text(worker_rows))
        for row in worker_rows:
            print(f"{row.key}: {command_summary(row)}")
        for row in worker_rows:
            if row.data.get("worker_exit") != 0:
                print(f"WARNING: {row.key}'s worker exited with {row.data.get('worker_exit')}")
    if profile_dir is not None:
        print("\nprofiled: the rates above include cProfile overhead")
        for path in sorted(profile_dir.glob("profile-*.prof")):
            print(f"\n== {path.name}\n{profile_summary(path)}")
    profiles = [r.data["worker_profile"] for r in worker_rows if r.data.get("worker_profile")]
    if profiles:
        print("\nworker profiled (cProfile): its rates and latencies include the overhead")
        for name in profiles:
            if Path(name).exists():
                print(f"\n== {name}\n{profile_summary(Path(name), sort='cumulative', limit=25)}")
                print(profile_summary(Path(name)))
            else:
                print(f"\n== {name}: not written (the worker did not exit cleanly)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    with redis_target(args.redis_url) as (url, own_server):
        return asyncio.run(run_all(args, url, own_server, stamp))


if __name__ == "__main__":
    sys.exit(main())
