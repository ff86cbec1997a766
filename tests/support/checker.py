"""Reconciling the ledger with what Redis holds, once the system is quiet.

    lost        acknowledged ids that are neither completed nor dead-lettered (nor failed,
                with the DLQ off): missing records, or tasks stuck in a non-final state
    duplicated  ids with more than one successful handler run (ledger "done" lines);
                `unexplained` are those whose record shows no lost lease (lease_losses 0)
    structural  an id in two state structures or in none, a record whose state disagrees
                with its structure, a lease outside `processing` (or the reverse), a lease
                token above the fencing counter, counters that disagree with the sets, the
                DLQ's time order out of step with the DLQ, per-minute history that does not
                add up to the lifetime counters (the same scripts write both)

A "standard pass" is lost = 0, structural = 0 and every duplicate explained by a lost lease.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from tests.support.ledger import Ledger
from tests.support.state import ZSETS, read_queue, single_state_violations
from utils.redis_queue import RedisTaskQueue
from utils.redis_queue.keys import QueueKeys
from utils.redis_queue.queue.history import COUNTERS

FINAL = {"completed", "dead_letter", "failed", "cancelled"}


@dataclass
class Report:
    acknowledged: int = 0
    records: int = 0
    runs: int = 0  # successful handler runs in the ledger
    final: Counter[str] = field(default_factory=Counter)  # acknowledged ids by final state
    lost: dict[str, str] = field(default_factory=dict)  # id -> what Redis says
    duplicated: dict[str, int] = field(default_factory=dict)  # id -> successful runs
    unexplained: list[str] = field(default_factory=list)  # duplicates with no lost lease
    structural: list[str] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        return (
            f"acknowledged={self.acknowledged} records={self.records} runs={self.runs} "
            f"final={dict(self.final)} lost={len(self.lost)} duplicated={len(self.duplicated)} "
            f"unexplained={len(self.unexplained)} structural={len(self.structural)}"
        )

    def details(self, limit: int = 10) -> str:
        lost = list(self.lost.items())[:limit]
        return (
            f"{self.summary()}\n lost: {lost}\n duplicated: {list(self.duplicated.items())[:limit]}"
            f"\n unexplained: {self.unexplained[:limit]}\n structural: {self.structural[:limit]}"
            f"\n counters: {self.counters}"
        )

    def assert_standard_pass(self, context: str = "") -> None:
        assert not self.lost and not self.structural and not self.unexplained, (
            f"{self.details()}\n{context}"
        )


async def check(
    redis: Redis, keys: QueueKeys, ledger: Ledger, *, records_not_enqueued: int = 0
) -> Report:
    """Reconcile; `records_not_enqueued` counts task records written by hand (bad data)."""
    report = Report()
    view = await read_queue(redis, keys)
    structures, records, stats = view.structures, view.records, view.stats
    report.records = len(records)
    report.structural.extend(single_state_violations(view))

    sizes = {name: len([i for i, w in structures.items() if name in w]) for name in ZSETS}
    dlq = len([i for i, w in structures.items() if "dead_letter" in w])
    counters = {k: int(v) for k, v in stats.items() if k not in ("clock", "fence")}
    report.counters = counters
    expect = {
        "completed": sizes["completed"],
        "cancelled": sizes["cancelled"],
        "dead_lettered": dlq + counters.get("dlq_retried", 0),
    }
    if not counters.get("dlq_retried"):
        expect["failed"] = counters.get("dead_lettered", 0) + sizes["failed"]
    expect["enqueued"] = len(records) - records_not_enqueued
    for name, value in expect.items():
        if counters.get(name, 0) != value:
            report.structural.append(f"counter {name}={counters.get(name, 0)} but expected {value}")
    for name in COUNTERS:
        if view.history.get(name, 0) != counters.get(name, 0):
            report.structural.append(
                f"history {name}={view.history.get(name, 0)} but counter {name}="
                f"{counters.get(name, 0)}"
            )

    acks = ledger.acks()
    report.acknowledged = len(acks)
    for task_id in acks:
        record = records.get(task_id)
        state = record.get("state", "?") if record is not None else "missing"
        if state in FINAL:
            report.final[state] += 1
        else:
            report.lost[task_id] = state
    successes = ledger.successes()
    report.runs = sum(len(r) for r in successes.values())
    for task_id, runs in successes.items():
        if len(runs) > 1:
            report.duplicated[task_id] = len(runs)
            record = records.get(task_id) or {}
            if int(record.get("lease_losses", "0")) == 0:
                report.unexplained.append(task_id)
    return report


async def reconcile(queue: RedisTaskQueue, ledger: Ledger, **kw: Any) -> Report:
    """check() on a connected queue's Redis and keys."""
    return await check(queue.redis, queue.keys, ledger, **kw)
