"""Throughput, latency and memory of RedisTaskQueue against raw redis-py baselines.

    .venv/bin/python bench/queue_bench.py            # or: make bench
    .venv/bin/python bench/queue_bench.py --quick --scenarios AE
    .venv/bin/python bench/queue_bench.py --redis-url redis://host:6379/0

Starts a private redis-server (no persistence) on a free port unless --redis-url is
given; then it uses a queue name of its own and deletes only keys matching
`agentic:{<queue>}:*` (the raw baselines write there too). Payloads are ~100 bytes of
JSON, task ids are uuid4().hex.

Baselines:  (a) LPUSH awaited one at a time   (b) LPUSH in pipelines of 1,000
Scenarios:  A enqueue() one at a time          B enqueue_many() in chunks of 1,000
            C dequeue + complete_task, 10 coroutines, queue pre-filled
            E enqueue -> wait_for_result round trip, worker in a subprocess
            F used_memory per pending task (enqueue_many, no worker)

Prints a table with targets, a cost breakdown (client CPU, server CPU, EVALSHA time per
task) and writes everything as JSON to bench/results/queue-bench-<timestamp>.json.
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
import subprocess
import sys
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

from bench.queue_worker import STOP_TYPE  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402
from utils.redis_queue import RedisTaskQueue  # noqa: E402

RESULTS_DIR = ROOT / "bench" / "results"
WORKER_SCRIPT = ROOT / "bench" / "queue_worker.py"
KEY_PREFIX = "agentic"
TASK_TYPE = "noop"
PAD = "x" * 80  # {"i":n,"data":"xx..."} is 96-101 bytes of JSON
ALL_SCENARIOS = "ABCEF"

# Targets: A as a ratio to baseline (a), B in tasks/s, E p50 in ms, F in bytes per task.
TARGET_A_RATIO = 0.8
TARGET_B_RATE = 50_000.0
TARGET_E_P50_MS = 1.5
TARGET_F_BYTES = 500.0


@dataclass(frozen=True)
class Sizes:
    raw_single: int  # (a) LPUSH commands awaited one at a time
    raw_pipelined: int  # (b) LPUSH commands, in pipelines of `chunk`
    enqueue_one: int  # A
    enqueue_many: int  # B
    drain: int  # C
    round_trips: int  # E
    warmup: int  # E warm-up trips, and warm-up calls before A and (a)
    memory: int  # F
    chunk: int = 1_000
    workers: int = 10


FULL = Sizes(10_000, 100_000, 10_000, 50_000, 20_000, 1_000, 50, 100_000)
QUICK = Sizes(500, 5_000, 500, 5_000, 1_000, 100, 10, 5_000)


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

    def __init__(self, admin: Redis, profile_to: Path | None = None) -> None:
        self.admin = admin
        self.profile_to = profile_to
        self.wall_s = 0.0
        self.client_cpu_s = 0.0
        self.server_cpu_s = 0.0
        self.commands: dict[str, tuple[int, int]] = {}
        self._profiler = cProfile.Profile() if profile_to is not None else None
        self._start: ServerCounters | None = None
        self._t0 = self._cpu0 = 0.0

    async def __aenter__(self) -> Self:
        self._start = await server_counters(self.admin)
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

    def cost(self, tasks: int, wall_s: float | None = None) -> Cost:
        delta = {k: v for k, v in self.commands.items() if k != "info"}  # not the probe's
        calls, usec = delta.get("evalsha", (0, 0))
        return Cost(
            wall_us=(self.wall_s if wall_s is None else wall_s) / tasks * 1e6,
            client_cpu_us=self.client_cpu_s / tasks * 1e6,
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

    def queue(self) -> RedisTaskQueue:
        return RedisTaskQueue(queue_name=self.queue_name, redis_url=self.url)

    def raw_key(self, name: str) -> str:
        return f"{KEY_PREFIX}:{{{self.queue_name}}}:bench-raw:{name}"

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


async def scenario_c(bench: Bench) -> Row:
    n, workers = bench.sizes.drain, bench.sizes.workers
    async with bench.queue() as queue:
        await warm_up(bench, queue)
        for chunk in chunks(task_dicts(n), bench.sizes.chunk):
            await queue.enqueue_many(chunk)
        async with bench.probe("C") as probe:
            start = time.perf_counter()
            done, last = await drain(queue, workers)
    if done != n:
        raise RuntimeError(f"scenario C completed {done} of {n} tasks")
    elapsed = last - start  # excludes the final 1 s dequeue timeout of idle workers
    rate = n / elapsed
    ratio = rate / bench.raw_rate
    return Row(
        key="C",
        name=f"dequeue()+complete_task(), {workers} coroutines",
        measured=fmt_rate(rate, "tasks"),
        baseline=f"(a) {fmt_rate(bench.raw_rate, 'ops')}",
        ratio=f"{ratio:.2f}x",
        target="print only",
        cost=probe.cost(n, elapsed),
        data={"n": n, "workers": workers, "tasks_per_s": rate, "ratio": ratio},
    )


@contextlib.asynccontextmanager
async def worker_process(bench: Bench) -> AsyncIterator[asyncio.subprocess.Process]:
    """bench/queue_worker.py on the benchmark's queue, ready when this yields."""
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


async def round_trip(queue: RedisTaskQueue, i: int) -> tuple[float, float]:
    """One enqueue -> wait_for_result trip; returns (enqueue seconds, total seconds)."""
    task_id = uuid.uuid4().hex
    t0 = time.perf_counter()
    await queue.enqueue(task_id, TASK_TYPE, payload(i))
    t1 = time.perf_counter()
    result = await queue.wait_for_result(task_id, timeout=5)
    t2 = time.perf_counter()
    if result != {"ok": True}:
        raise RuntimeError(f"unexpected result {result!r}")
    return t1 - t0, t2 - t0


async def scenario_e(bench: Bench) -> Row:
    n = bench.sizes.round_trips
    totals: list[float] = []
    enqueues: list[float] = []
    async with bench.queue() as queue, worker_process(bench) as proc:
        for i in range(bench.sizes.warmup):
            await round_trip(queue, i)
        async with bench.probe("E") as probe:
            for i in range(n):
                enqueue_s, total_s = await round_trip(queue, i)
                enqueues.append(enqueue_s)
                totals.append(total_s)
        await stop_worker(queue, proc)
    p50, p99 = percentile(totals, 50) * 1e3, percentile(totals, 99) * 1e3
    enqueue_p50 = percentile(enqueues, 50) * 1e3
    ratio = p50 / bench.raw_p50_ms
    return Row(
        key="E",
        name="enqueue -> wait_for_result (worker process)",
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


SCENARIOS = {"A": scenario_a, "B": scenario_b, "C": scenario_c, "E": scenario_e, "F": scenario_f}


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


def profile_summary(path: Path, limit: int = 15) -> str:
    out = io.StringIO()
    stats = pstats.Stats(str(path), stream=out)
    stats.sort_stats("tottime").print_stats(limit)
    return out.getvalue()


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


def cpu_ticks() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs from /proc/stat; None off Linux."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


async def busy_cpus(sample_s: float = 0.3) -> float | None:
    """How many CPUs other processes keep busy while this one sits idle."""
    start = cpu_ticks()
    await asyncio.sleep(sample_s)  # a sampling interval, not a wait for work
    end = cpu_ticks()
    if start is None or end is None or end[1] == start[1]:
        return None
    return round((end[0] - start[0]) / (end[1] - start[1]) * (os.cpu_count() or 1), 2)


def busy_warning(env: dict[str, Any]) -> str | None:
    """Other processes competing for the CPUs make every number here noisy."""
    busy = max((b for b in env["busy_cpus"].values() if b is not None), default=0.0)
    if busy < 0.25:
        return None
    return (
        f"WARNING: other processes kept up to {busy:.2f} of {env['cpus']} CPUs busy between "
        f"scenarios {env['busy_cpus']}; the numbers are noisy, rerun on an idle machine"
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
    parser.add_argument("--scenarios", default=ALL_SCENARIOS, help="subset of ABCEF")
    parser.add_argument("--json", type=Path, help="results file (default: bench/results/)")
    parser.add_argument(
        "--profile", action="store_true", help="cProfile each measured section (slower!)"
    )
    args = parser.parse_args(argv)
    args.scenarios = args.scenarios.upper()
    unknown = set(args.scenarios) - set(ALL_SCENARIOS)
    if unknown or not args.scenarios:
        parser.error(f"--scenarios takes letters from {ALL_SCENARIOS}, got {args.scenarios!r}")
    return args


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
    if profile_dir is not None:
        profile_dir.mkdir(parents=True, exist_ok=True)
    admin = Redis.from_url(url)
    bench = Bench(url, admin, queue_name, sizes, profile_dir)
    try:
        await clear_keys(admin, queue_name)
        env = await environment(bench, own_server)
        print(f"queue_bench: {env}", flush=True)
        busy = env["busy_cpus"] = {"ab": await busy_cpus()}
        rows = await run_baselines(bench)
        for key in ALL_SCENARIOS:
            if key in args.scenarios:
                busy[key] = await busy_cpus()
                print(f"running {key} ...", flush=True)
                rows.append(await SCENARIOS[key](bench))
                await clear_keys(admin, queue_name)
    finally:
        await clear_keys(admin, queue_name)
        await admin.aclose()
    busy["end"] = await busy_cpus()
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
    warning = busy_warning(env)
    if warning:
        print(warning)
    print(results_table(rows))
    print("\nC: each task costs 2 script round trips (claim + complete) and 10 run at once.")
    print("E: the critical path is enqueue, BLPOP wake-up, claim, complete, BLMOVE, HGETALL;")
    print("   its client CPU is this process only (not the worker's), its server CPU both.")
    print("\nwhere the time goes (per task; server CPU = INFO cpu delta, EVALSHA = Lua):")
    print(cost_table(rows))
    if profile_dir is not None:
        print("\nprofiled: the rates above include cProfile overhead")
        for path in sorted(profile_dir.glob("*.prof")):
            print(f"\n== {path.name}\n{profile_summary(path)}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    with redis_target(args.redis_url) as (url, own_server):
        return asyncio.run(run_all(args, url, own_server, stamp))


if __name__ == "__main__":
    sys.exit(main())
