"""Paths and names the benchmark shares, and the sizes of a full and a quick run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.apps import NOOP_TYPE

ROOT = Path(__file__).resolve().parents[2]  # the repository: bench/harness/config.py
KEY_PREFIX = "agentic"
TASK_TYPE = NOOP_TYPE  # served by bench.apps:registry (C, D, E) and queue_worker.py (E0)


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


@dataclass(frozen=True)
class SoakSettings:
    """T, the bounded soak (--soak-*): None means derived from the length of the run."""

    minutes: float = 10.0
    rate: float | None = None  # tasks/s; None: 80% of a measured C rate
    window_s: float | None = None  # None: a twentieth of the run, 0.5 to 30 s
    ttl_s: int | None = None  # AGENTIC_TASK_TTL_SECONDS; None: a tenth of the run, 1 to 60 s

    @property
    def duration_s(self) -> float:
        return self.minutes * 60

    @property
    def window(self) -> float:
        if self.window_s is not None:
            return self.window_s
        return min(30.0, max(0.5, self.duration_s / 20))

    @property
    def ttl(self) -> int:
        if self.ttl_s is not None:
            return self.ttl_s
        return int(min(60, max(1, self.duration_s // 10)))
