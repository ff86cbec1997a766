"""Stopping and stalling workers under load (reliability.md §3 A 3-6): SIGTERM with a long
and a short grace period, a handler that blocks the event loop past the lease, tasks ten
times longer than the lease, and a blocked task past its hard limit (timeout + lease)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.checker import reconcile
from tests.support.fault_servers import FaultRedis
from tests.support.ledger import Ledger
from tests.support.load import drained, enqueue_all, poll, value

Factory = Callable[..., Any]


def slow(
    seed: int, count: int, prefix: str, low: int, high: int
) -> list[tuple[str, dict[str, Any]]]:
    rng = random.Random(seed)
    return [(f"{prefix}-{i}", {"ms": rng.randint(low, high)}) for i in range(count)]


@pytest.mark.timeout(60)
async def test_sigterm_stops_claiming_at_once_and_finishes_what_runs(
    fault_redis: FaultRedis,
    queue_factory: Factory,
    workers_factory: Factory,
    ledger: Ledger,
    fault_totals: Factory,
) -> None:
    """Case 3: 3 workers, 400 tasks of 200-400 ms; one gets SIGTERM (grace 10 s). It claims
    nothing more, finishes every task it started, exits 0; no task runs twice."""
    q = await queue_factory(fault_redis)
    workers = workers_factory(fault_redis, lease=2.0, grace=10.0)
    acked = await enqueue_all(q, ledger.producer(), slow(3, 400, "d", 200, 400))
    victim, *_ = [workers.start() for _ in range(3)]
    assert await poll(lambda: value(len(ledger.by_pid(victim.pid)) >= 15), timeout=20)
    stopped_at = time.monotonic()
    workers.terminate(victim)
    assert await workers.wait_exit(victim, 10) == 0
    assert time.monotonic() - stopped_at < 2.0  # its tasks are 0.4 s at most
    started, finished = ledger.by_pid(victim.pid), ledger.by_pid(victim.pid, "done")
    assert started == finished
    late = [r for r in ledger.runs() if r.pid == victim.pid and r.at > stopped_at + 0.1]
    assert not [r for r in late if r.kind == "start"]  # claimed nothing after SIGTERM
    assert await drained(q, acked, timeout=30), await q.get_queue_size()
    assert await workers.stop_all() == [0, 0]
    report = await reconcile(q, ledger)
    report.assert_standard_pass(workers.logs())
    assert not report.duplicated and report.final["completed"] == acked
    fault_totals(report, 1)


@pytest.mark.timeout(60)
async def test_sigterm_with_a_grace_shorter_than_the_tasks_hands_them_back_uncounted(
    fault_redis: FaultRedis,
    queue_factory: Factory,
    workers_factory: Factory,
    ledger: Ledger,
    fault_totals: Factory,
) -> None:
    """Case 3, short grace: tasks of 3 s, grace 0.5 s. The worker exits 0 within the grace
    (plus start-up slack); its unfinished tasks go back to pending, not to the DLQ, without
    counting an attempt or a retry, and other workers complete them."""
    q = await queue_factory(fault_redis)
    workers = workers_factory(fault_redis, lease=2.0)
    tasks = [(f"long-{i}", {"ms": 3000}) for i in range(12)] + slow(4, 100, "s", 5, 20)
    acked = await enqueue_all(q, ledger.producer(), tasks)
    victim = workers.start(FAULT_GRACE="0.5")
    assert await poll(lambda: value(len(ledger.by_pid(victim.pid)) >= 10), timeout=20)
    stopped_at = time.monotonic()
    workers.terminate(victim)
    assert await workers.wait_exit(victim, 10) == 0
    assert time.monotonic() - stopped_at < 0.5 + 1.5
    handed_back = ledger.by_pid(victim.pid) - ledger.by_pid(victim.pid, "done")
    assert handed_back
    workers.start()
    workers.start()
    assert await drained(q, acked, timeout=30), await q.get_queue_size()
    assert await workers.stop_all() == [0, 0]
    for task_id in handed_back:
        task = await q.get_task(task_id)
        assert task is not None and task.state == "completed"
        assert task.attempts == 1 and task.retry_count == 0 and task.lease_losses == 0
    assert (await q.get_statistics())["total_retried"] == 0
    report = await reconcile(q, ledger)
    report.assert_standard_pass(workers.logs())
    assert not report.duplicated
    fault_totals(report, 1)


@pytest.mark.timeout(60)
async def test_blocked_loops_and_long_tasks_keep_their_leases_until_the_hard_limit(
    fault_redis: FaultRedis,
    queue_factory: Factory,
    workers_factory: Factory,
    ledger: Ledger,
    fault_totals: Factory,
) -> None:
    """Case 4, lease 0.5 s, 3 workers and 300 short tasks beside:
    - handlers that block their event loop for 1.5 s (3x the lease) keep their leases (the
      lease keeper is its own process) and run once;
    - tasks of 5 s (10x the lease) are never reclaimed;
    - a handler blocking 3 s with a 0.5 s timeout passes its hard limit (timeout + lease):
      renewals stop, another worker re-runs it, and the blocked worker's late completion
      is rejected by its fencing token; the re-run's result stands."""
    q = await queue_factory(fault_redis)
    workers = workers_factory(fault_redis, lease=0.5)
    writer = ledger.producer()
    await q.enqueue("overrun", "work", {"block_s": 3.0}, timeout=0.5)
    writer.ack(["overrun"])
    tasks = [(f"block-{i}", {"block_s": 1.5}) for i in range(3)]
    tasks += [(f"long-{i}", {"ms": 5000}) for i in range(3)]
    tasks += slow(44, 300, "s", 5, 50)
    acked = 1 + await enqueue_all(q, writer, tasks)
    for _ in range(3):
        workers.start()
    assert await drained(q, acked, timeout=40), await q.get_queue_size()
    assert await poll(lambda: value("result of overrun rejected" in workers.logs()), timeout=10)
    assert await workers.stop_all() == [0, 0, 0]
    for task_id in [t for t, _ in tasks[:6]]:
        task = await q.get_task(task_id)
        assert task is not None and task.state == "completed", task
        assert task.lease_losses == 0 and task.attempts == 1, (task, workers.logs())
    overrun = await q.get_task("overrun")
    assert overrun is not None and overrun.lease_losses == 1 and overrun.attempts == 2
    rescuer, blocked = ledger.successes()["overrun"]  # the blocked run ended last
    assert (rescuer.attempt, blocked.attempt) == (2, 1)
    assert overrun.result["pid"] == rescuer.pid != blocked.pid
    assert "passed its hard limit" in workers.logs()
    report = await reconcile(q, ledger)
    report.assert_standard_pass(workers.logs())
    assert list(report.duplicated) == ["overrun"]
    fault_totals(report, 4)  # three loops blocked past the lease, one past its hard limit
