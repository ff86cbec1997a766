"""T: issue 18's scenario H (the letter H is flow limits here), a bounded soak.

One `agentic worker` process (--concurrency 10, no-op handler) serves a producer sending at
80% of the C rate (measured first the way C measures it, or C's figure when C ran in the
same invocation; `--soak-rate N` sends N tasks/s instead) for `--soak-minutes` (10; 1 with
--quick). The producer is open-loop: task i is due at start + i / rate on the wall clock
and every PACE_S tick sends what is due in one enqueue_many(), so a worker that falls
behind shows as growing latency and backlog, not as a slower producer.

Finished tasks are cleaned the way a deployment has them cleaned: the worker runs with
AGENTIC_TASK_TTL_SECONDS (`--soak-ttl`; 60 s in a 10-minute run) and complete's trim
(every 10th completion deletes up to 100 completed or cancelled tasks older than that)
deletes them; the bench never calls clear_completed().

Per window (`--soak-window`; 30 s in a 10-minute run): tasks sent and completed per
second; enqueue -> completion latency p50/p99/max in server time (the task's `created`,
as enqueue_many() returns it, to its score in the `completed` set; whole ms, the
resolution of both); the backlog (pending + processing); Redis used_memory and the
worker's RSS (VmRSS of the worker and its lease keeper), means of the samples taken every
second; how late the producer sent; and the CPUs other processes kept busy. The verdict
skips a warm-up (the TTL plus one window, or a tenth of the run when longer) and compares
the mean of the last third of the remaining windows with the first third's; a run whose
backlog reaches BACKLOG_LIMIT_S of tasks stops sending (and is a miss) but samples on to
its planned end. The rate reported is the tasks completed over start -> last completion.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bench.harness.config import TASK_TYPE
from bench.harness.context import Bench, Row, clear_keys, fmt_rate
from bench.harness.load import LoadSample, load_sample, others_cpus
from bench.harness.payloads import payload, percentile
from bench.harness.probe import Probe, server_ms, used_memory
from bench.harness.processes import WORKER_START_TIMEOUT, WorkerProcs, agentic_worker, cpu_delta
from bench.scenarios.common import round_trip, warm_up
from bench.scenarios.workers import worker_drain
from utils.redis_queue import RedisTask, RedisTaskQueue

SHARE = 0.8  # of the C rate
PACE_S = 0.002  # the producer sends what is due every 2 ms
MAX_BATCH = 1_000  # one enqueue_many() script call
MEMORY_TOLERANCE = 0.10  # used_memory and RSS: flat if the last third is within +10%
P99_TOLERANCE = 0.50  # p99 of ~ms latencies on a shared machine: within +50%
BACKLOG_LIMIT_S = 60.0  # stop sending once this many seconds of tasks wait
DRAIN_TIMEOUT_S = 120.0
ID_PREFIX = "soak-"  # the warm-up round trip's task is not one of the soak's
MB = 1024 * 1024
PER_HELD = "bytes_per_held_task"


@dataclass
class Window:
    sent: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    used_memory: list[int] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)
    backlog: int = 0  # at the window's last sample
    held: list[int] = field(default_factory=list)  # tasks in Redis: backlog + finished kept
    lag_ms: float = 0.0  # the producer's worst lateness against its schedule
    others_cpus: float | None = None

    def summary(self, index: int, window_s: float, base: int = 0) -> dict[str, Any]:
        """`base`: used_memory before the soak, for the bytes per task held."""
        lat = self.latencies_ms
        memory = statistics.fmean(self.used_memory) if self.used_memory else None
        held = statistics.fmean(self.held) if self.held else None
        return {
            "window": index,
            "end_s": round((index + 1) * window_s, 3),
            "sent": self.sent,
            "sent_per_s": self.sent / window_s,
            "completed_per_s": len(lat) / window_s,
            "p50_ms": percentile(lat, 50) if lat else None,
            "p99_ms": percentile(lat, 99) if lat else None,
            "max_ms": max(lat) if lat else None,
            "used_memory": memory,
            "held_tasks": held,
            "bytes_per_held_task": (memory - base) / held if memory and held else None,
            "rss": statistics.fmean(self.rss) if self.rss else None,
            "backlog": self.backlog,
            "producer_lag_ms": self.lag_ms,
            "others_cpus": self.others_cpus,
        }


def created_ms(task: RedisTask) -> float:
    """The server ms enqueue.lua wrote as `created` (RedisTask carries it as local ISO)."""
    return round(datetime.fromisoformat(task.created_at).timestamp() * 1000)


class Soak:
    """The producer and the sampler of one soak; `windows` holds what they saw."""

    def __init__(self, bench: Bench, queue: RedisTaskQueue, workers: WorkerProcs, rate: float):
        self.bench, self.queue, self.workers, self.rate = bench, queue, workers, rate
        self.window_s = bench.soak.window
        self.windows = [
            Window() for _ in range(max(1, round(bench.soak.duration_s / self.window_s)))
        ]
        self.duration_s = len(self.windows) * self.window_s
        self.total = max(1, round(rate * self.duration_s))
        self.tail = Window()  # completions after the last window: the drain
        self.sent = self.completed = 0
        self.enqueued: dict[str, float | None] = {}  # in flight: id -> server ms sent
        self.early: dict[str, float] = {}  # completed before enqueue_many()'s reply was read
        self.cursor, self.at_cursor = 0.0, set[str]()
        self.stopped: str | None = None  # why the producer stopped early
        self.t0 = self.start_ms = 0.0
        self.closed = 0
        self.last_done_ms = 0.0
        self.base_memory = 0
        self.load: LoadSample | None = None

    def window_at(self, t: float) -> Window:
        index = max(0, int((t - self.t0) / self.window_s))
        return self.windows[index] if index < len(self.windows) else self.tail

    def record(self, done_ms: float, latency_ms: float) -> None:
        self.window_at(self.t0 + (done_ms - self.start_ms) / 1000).latencies_ms.append(latency_ms)
        self.completed += 1
        self.last_done_ms = max(self.last_done_ms, done_ms)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self.base_memory = await used_memory(self.bench.admin)  # the queue nearly empty
        self.start_ms, self.t0 = await server_ms(self.bench.admin), loop.time()
        self.cursor, self.load = self.start_ms, load_sample()
        producer = asyncio.create_task(self.produce())
        try:
            await self.sample(producer)
        finally:
            producer.cancel()
            await asyncio.gather(producer, return_exceptions=True)

    async def produce(self) -> None:
        """Open loop: at each PACE_S tick, send every task whose due time has passed."""
        loop = asyncio.get_running_loop()
        tick = 0
        while self.sent < self.total and self.stopped is None:
            now = loop.time()
            tick_at = self.t0 + tick * PACE_S
            if now < tick_at:
                await asyncio.sleep(tick_at - now)  # the schedule: wall clock, not replies
                now = loop.time()
            tick = int((now - self.t0) / PACE_S) + 1  # a late tick skips those it missed
            due = min(self.total, int((now - self.t0) * self.rate) + 1) - self.sent
            if due <= 0:
                continue
            due = min(due, MAX_BATCH)
            window = self.window_at(now)
            window.sent += due
            late_ms = (now - self.t0 - self.sent / self.rate) * 1000
            window.lag_ms = max(window.lag_ms, late_ms)
            specs = [
                {"task_id": f"{ID_PREFIX}{uuid.uuid4().hex}", "task_type": TASK_TYPE,
                 "payload": payload(self.sent + j)}
                for j in range(due)
            ]  # fmt: skip
            for spec in specs:
                self.enqueued[spec["task_id"]] = None
            self.sent += due
            for task in await self.queue.enqueue_many(specs):
                sent_ms = created_ms(task)
                done_ms = self.early.pop(task.task_id, None)
                if done_ms is None:
                    self.enqueued[task.task_id] = sent_ms
                else:
                    del self.enqueued[task.task_id]
                    self.record(done_ms, done_ms - sent_ms)

    async def collect(self) -> tuple[int, int]:
        """Read the completions since the cursor (server-time scores); returns the backlog
        and the finished tasks kept (not yet trimmed)."""
        keys = self.queue.keys
        async with self.bench.admin.pipeline(transaction=False) as pipe:
            pipe.zrangebyscore(keys.completed, self.cursor, "+inf", withscores=True)
            pipe.zcard(keys.pending(TASK_TYPE))
            pipe.zcard(keys.processing)
            pipe.zcard(keys.completed)
            done, pending, processing, kept = await pipe.execute()
        for raw, score in done:
            task_id = raw.decode()
            if score == self.cursor and task_id in self.at_cursor:
                continue  # read by the previous call (same ms)
            if score > self.cursor:
                self.cursor, self.at_cursor = score, set()
            self.at_cursor.add(task_id)
            if task_id not in self.enqueued:
                continue  # the warm-up's
            sent_ms = self.enqueued[task_id]
            if sent_ms is None:  # done before the producer read enqueue_many()'s reply
                self.early[task_id] = score
            else:
                del self.enqueued[task_id]
                self.record(score, score - sent_ms)
        return int(pending) + int(processing), int(kept)

    async def sample(self, producer: asyncio.Task[None]) -> None:
        """Every tick: completions, backlog, used_memory, RSS; print each window closed."""
        loop = asyncio.get_running_loop()
        tick_s = min(1.0, self.window_s / 5)
        next_at = self.t0 + tick_s
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))  # the sampling period
            next_at += tick_s
            read_at = loop.time()
            backlog, kept = await self.collect()
            memory = await used_memory(self.bench.admin)
            window = self.window_at(read_at)
            window.used_memory.append(memory)
            window.rss.append(sum(self.workers.rss().values()))
            window.backlog = backlog
            window.held.append(backlog + kept)
            self.close_windows(read_at)
            if backlog > self.rate * BACKLOG_LIMIT_S and self.stopped is None:
                self.stopped = f"backlog of {backlog:,} tasks after {read_at - self.t0:.0f} s"
            if producer.done():
                producer.result()  # its error, if any
                # Sampling goes on to the planned end after an early stop (does memory
                # come back once the backlog is gone?), then waits for the last tasks.
                end = self.t0 + self.duration_s
                done = self.completed + len(self.early) >= self.sent
                if (done and read_at >= end) or read_at > end + DRAIN_TIMEOUT_S:
                    return

    def close_windows(self, now: float) -> None:
        while (
            self.closed < len(self.windows) and now >= self.t0 + (self.closed + 1) * self.window_s
        ):
            current = load_sample()
            window = self.windows[self.closed]
            if self.load is not None:
                window.others_cpus = others_cpus(self.load, current)
            self.load = current
            s = window.summary(self.closed, self.window_s, self.base_memory)
            print(f"  T {s['end_s']:6g} s  {window_line(s)}", flush=True)
            self.closed += 1


def window_line(s: dict[str, Any]) -> str:
    lat = "-" if s["p50_ms"] is None else f"{s['p50_ms']:.0f}/{s['p99_ms']:.0f}/{s['max_ms']:.0f}"
    memory = "-" if s["used_memory"] is None else f"{s['used_memory'] / MB:.1f}"
    rss = "-" if s["rss"] is None else f"{s['rss'] / MB:.1f}"
    return (
        f"sent {s['sent_per_s']:,.0f}/s done {s['completed_per_s']:,.0f}/s  "
        f"p50/p99/max {lat} ms  used_memory {memory} MB  RSS {rss} MB  "
        f"backlog {s['backlog']:,}  lag {s['producer_lag_ms']:.0f} ms  others {s['others_cpus']}"
    )


def warmup_windows(bench: Bench, windows: int) -> int:
    warm_s = max(bench.soak.ttl + bench.soak.window, bench.soak.duration_s / 10)
    return min(windows - 1, math.ceil(warm_s / bench.soak.window))


def thirds(series: list[dict[str, Any]], key: str, tolerance: float) -> dict[str, Any] | None:
    """First and last third's means of `key`, and whether the last is within tolerance."""
    k = len(series) // 3
    first = [s[key] for s in series[:k] if s[key] is not None]
    last = [s[key] for s in series[-k:] if s[key] is not None] if k else []
    if not first or not last:
        return None
    a, b = statistics.fmean(first), statistics.fmean(last)
    xs = [float(s["end_s"]) for s in series if s[key] is not None]
    ys = [float(s[key]) for s in series if s[key] is not None]
    slope = statistics.linear_regression(xs, ys).slope * 60 if len(set(xs)) > 1 else 0.0
    return {
        "first": a,
        "last": b,
        "change": b / a - 1 if a else math.inf,
        "tolerance": tolerance,
        "flat": b <= a * (1 + tolerance),
        "slope_per_min": slope,
    }


async def c_rate(bench: Bench) -> tuple[float, dict[str, Any]]:
    """C's rate: from this run's C row, else C measured now (the same worker_drain)."""
    if "C" not in bench.rows:
        bench.rows["C"] = await worker_drain(bench, "C", processes=1)
        await clear_keys(bench.admin, bench.queue_name)
        source = "measured by T, as C"
    else:
        source = "C in this run"
    data = bench.rows["C"].data
    rate = float(data["tasks_per_s"])
    return rate, {"tasks_per_s": rate, "n": data["n"], "source": source}


async def scenario_t(bench: Bench) -> Row:
    settings = bench.soak
    c: dict[str, Any] | None = None
    if settings.rate is not None:
        rate = settings.rate
        if "C" in bench.rows:  # `--scenarios C,T --soak-rate N`: quoted against this C
            c = (await c_rate(bench))[1]
    else:
        measured, c = await c_rate(bench)
        rate = SHARE * measured
    ttl = settings.ttl
    async with bench.queue() as queue:
        await warm_up(bench, queue)
        extra = {"AGENTIC_TASK_TTL_SECONDS": str(ttl)}
        async with agentic_worker(bench, 1, env=extra) as workers:
            await round_trip(queue, 0, timeout=WORKER_START_TIMEOUT)  # started
            soak = Soak(bench, queue, workers, rate)
            probe = Probe(bench.admin, collect=False)
            wcpu0 = workers.cpu()
            async with probe:
                await soak.run()
            wcpu1 = workers.cpu()
        kept = await bench.admin.zcard(queue.keys.completed)  # what the trim left
    windows = [w.summary(i, soak.window_s, soak.base_memory) for i, w in enumerate(soak.windows)]
    warm = warmup_windows(bench, len(windows))
    steady = windows[warm:]
    verdict = {
        "used_memory": thirds(steady, "used_memory", MEMORY_TOLERANCE),
        "rss": thirds(steady, "rss", MEMORY_TOLERANCE),
        "p99_ms": thirds(steady, "p99_ms", P99_TOLERANCE),
    }
    finished = soak.completed + len(soak.early) == soak.sent == soak.total
    # kept up: never stopped for its backlog, and at most a second of work waits at the end
    kept_up = soak.stopped is None and windows[-1]["backlog"] <= rate
    flats = [v["flat"] for v in verdict.values() if v is not None]
    hit = None if len(flats) < len(verdict) else all(flats)
    if not (finished and kept_up):
        hit = False
    # Not in the verdict: whether memory follows the tasks Redis holds (backlog and the
    # finished ones the TTL keeps), which tells a leak from a backlog.
    verdict["bytes_per_held_task"] = thirds(steady, "bytes_per_held_task", MEMORY_TOLERANCE)
    span_s = (soak.last_done_ms - soak.start_ms) / 1000  # start -> last completion
    achieved = soak.completed / span_s if span_s > 0 else 0.0
    all_lat = [x for w in soak.windows for x in w.latencies_ms]
    worker_cpu = cpu_delta(wcpu0, wcpu1)
    return Row(
        key="T",
        name=f"soak: {rate:,.0f} tasks/s into one `agentic worker` for "
        f"{soak.duration_s / 60:g} min (issue 18's H)",
        measured=measured_text(
            achieved, verdict, soak, max(w["backlog"] for w in windows) if not kept_up else 0
        ),
        baseline=f"C {fmt_rate(c['tasks_per_s'], 'tasks')}" if c else f"--soak-rate {rate:g}",
        ratio=f"{achieved / c['tasks_per_s']:.2f}x" if c else "-",
        target=f"keeps up; flat: memory, RSS <= +{MEMORY_TOLERANCE:.0%}, "
        f"p99 <= +{P99_TOLERANCE:.0%}",
        hit=hit,
        cost=probe.cost(
            max(1, soak.completed), client_cpu_s=probe.client_cpu_s + sum(worker_cpu.values())
        ),
        data={
            "c": c,
            "share": rate / c["tasks_per_s"] if c else None,
            "rate": rate,
            "minutes": soak.duration_s / 60,
            "window_s": soak.window_s,
            "task_ttl_seconds": ttl,
            "cleanup": "AGENTIC_TASK_TTL_SECONDS on the worker: complete's trim deletes "
            "finished tasks older than it (every 10th completion, up to 100)",
            "warmup_windows": warm,
            "sent": soak.sent,
            "total": soak.total,
            "completed": soak.completed + len(soak.early),
            "completed_kept_at_end": kept,
            "used_memory_before": soak.base_memory,
            "stopped_early": soak.stopped,
            "kept_up": kept_up,
            "completed_per_s": achieved,
            "p50_ms": percentile(all_lat, 50) if all_lat else None,
            "p99_ms": percentile(all_lat, 99) if all_lat else None,
            "max_ms": max(all_lat) if all_lat else None,
            "drain": soak.tail.summary(len(windows), soak.window_s)
            | {"completed": len(soak.tail.latencies_ms)},
            "verdict": verdict,
            "windows": windows,
            "process_cpu_us_per_task": {
                "driver": probe.client_cpu_s / max(1, soak.sent) * 1e6,
                **{k: v / max(1, soak.completed) * 1e6 for k, v in worker_cpu.items()},
            },
            "worker_exit": workers.returncode,
            "worker_stop_s": workers.stop_s,
        },
    )


def measured_text(achieved: float, verdict: dict[str, Any], soak: Soak, behind: int) -> str:
    parts = [f"{fmt_rate(achieved, 'tasks')}"]
    if behind:
        parts.append(f"FELL BEHIND: backlog up to {behind:,}")
    p99, memory, rss = verdict["p99_ms"], verdict["used_memory"], verdict["rss"]
    if p99 is not None:
        parts.append(f"p99 {p99['first']:.1f} -> {p99['last']:.1f} ms")
    for name, v in (("used_memory", memory), ("RSS", rss)):
        if v is not None:
            parts.append(
                f"{name} {v['first'] / MB:.1f} -> {v['last'] / MB:.1f} MB ({v['change']:+.1%})"
            )
    if soak.stopped:
        parts.append(f"STOPPED: {soak.stopped}")
    return "; ".join(parts)


def t_text(row: Row) -> str:
    """The per-window series queue_bench.py prints under the table."""
    from bench.report import table  # report.py imports this module when it prints T

    data = row.data
    headers = ["window end", "sent/s", "done/s", "p50 ms", "p99 ms", "max ms", "used_memory MB",
               "worker RSS MB", "tasks held", "B/held task", "backlog", "lag ms",
               "others CPUs"]  # fmt: skip
    body = []
    for s in data["windows"]:
        body.append([
            f"{s['end_s']:g} s" + (" (warm-up)" if s["window"] < data["warmup_windows"] else ""),
            f"{s['sent_per_s']:,.0f}", f"{s['completed_per_s']:,.0f}",
            *("-" if s[k] is None else f"{s[k]:.0f}" for k in ("p50_ms", "p99_ms", "max_ms")),
            *("-" if s[k] is None else f"{s[k] / MB:.1f}" for k in ("used_memory", "rss")),
            *("-" if s[k] is None else f"{s[k]:,.0f}" for k in ("held_tasks", PER_HELD)),
            f"{s['backlog']:,}", f"{s['producer_lag_ms']:,.0f}",
            "-" if s["others_cpus"] is None else f"{s['others_cpus']:.2f}",
        ])  # fmt: skip
    lines = [f"\nT, per window (the verdict compares the thirds after the warm-up; task TTL "
             f"{data['task_ttl_seconds']} s):", table(headers, body)]  # fmt: skip
    for name, v in data["verdict"].items():
        if v is not None:
            scale, unit = {"p99_ms": (1.0, "ms"), "bytes_per_held_task": (1.0, "B")}.get(
                name, (MB, "MB")
            )
            lines.append(
                f"T {name}: first third {v['first'] / scale:,.2f} {unit}, last third "
                f"{v['last'] / scale:,.2f} {unit} ({v['change']:+.1%}, tolerance "
                f"+{v['tolerance']:.0%}: {'flat' if v['flat'] else 'GROWS'}); least-squares "
                f"slope after warm-up {v['slope_per_min'] / scale:+,.3f} {unit}/min"
            )
    return "\n".join(lines)
