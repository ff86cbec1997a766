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
