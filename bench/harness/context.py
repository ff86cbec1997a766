"""Bench, what every scenario gets, and Row, the line of the report it returns; plus
the key helpers that keep the benchmark inside its own `agentic:{<queue>}:*` keys."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from bench.harness.config import KEY_PREFIX, Sizes, SoakSettings
from bench.harness.probe import Cost, Probe
from utils.redis_queue import RedisTaskQueue
from utils.redis_queue.telemetry import MetricsSink


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
    own_server: bool = False  # a private redis-server: its config may be changed (SLOWLOG)
    events: bool = True  # --no-events: the task lifecycle events off (queue and workers)
    soak: SoakSettings = field(default_factory=SoakSettings)  # T: --soak-minutes etc.
    tracing: bool = False  # --tracing: the engine's spans on in this process
    metrics: MetricsSink | None = None  # --metrics: the queues this process makes count

    def queue(self) -> RedisTaskQueue:
        return RedisTaskQueue(
            queue_name=self.queue_name, redis_url=self.url, events=self.events, metrics=self.metrics
        )

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
