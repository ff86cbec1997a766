"""Worker faults under load (reliability.md §3 A): SIGKILL, a crash at every step of claim
and settle, SIGTERM, a blocked loop, long tasks, poison tasks and a stale worker.

Each test runs real worker processes (tests.support.fault_worker) against a private Redis,
records acknowledged enqueues and every handler run in the ledger, and ends with the
checker's standard pass: lost = 0, structural = 0, every duplicate on a lost lease."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.checker import reconcile
from tests.support.fault_servers import FaultRedis
from tests.support.ledger import Ledger
from tests.support.load import drained, enqueue_all, payloads, poll, value
from utils.redis_queue.registry import list_workers
from utils.redis_queue.worker import CRASH_EXIT_CODE, CRASH_STEPS

Factory = Callable[..., Any]


def orphan_delays(ledger: Ledger, kills: list[tuple[float, int]]) -> list[float]:
    """Seconds from each kill to the next start of every task the killed worker held."""
    runs = ledger.runs()
    delays = []
    for killed_at, pid in kills:
        held = {r.task_id for r in runs if r.pid == pid and r.kind == "start"}
        held -= {r.task_id for r in runs if r.pid == pid and r.kind == "done"}
        for task_id in held:
            again = [r.at for r in runs if r.task_id == task_id and r.kind == "start"]
            later = [t for t in again if t > killed_at]
            assert later, f"orphan {task_id} of worker {pid} never ran again"
            delays.append(min(later) - killed_at)
    return delays


@pytest.mark.timeout(120)
async def test_sigkill_of_a_random_worker_every_second_loses_nothing(
    fault_redis: FaultRedis,
    queue_factory: Factory,
    workers_factory: Factory,
    ledger: Ledger,
    fault_totals: Factory,
) -> None:
    """Case 1: 3 workers x 10 slots, 8,000 tasks of 5-50 ms; a random worker is SIGKILLed
    (with its lease keeper) every second and restarted. Orphans are re-run after their
    lease (1 s) expires; duplicates are only tasks in flight on a killed worker."""
    rng = random.Random(1)
    q = await queue_factory(fault_redis)
    workers = workers_factory(fault_redis, lease=1.0, concurrency=10)
    acked = await enqueue_all(q, ledger.producer(), payloads(1, 8000, "k"))
    for _ in range(3):
        workers.start()
    kills: list[tuple[float, int]] = []
    while len(kills) < 10:
        await asyncio.sleep(1.0)  # the fault schedule
        sizes = await q.get_queue_size()
        if sizes["pending"] < 500:
            break
        victim = rng.choice(workers.alive())
        kills.append((time.monotonic(), victim.pid))
        workers.kill(victim)
        workers.start()
    assert len(kills) >= 5, "the load ended before enough kills"
    assert await drained(q, acked, timeout=60), await q.get_queue_size()
    assert await workers.stop_all() == [0, 0, 0]
    report = await reconcile(q, ledger)
    report.assert_standard_pass(workers.logs())
    assert report.final["completed"] == acked == 8000
    # at most one slot's worth of duplicates per kill (a task finished, not yet acknowledged)
    assert len(report.duplicated) <= 10 * len(kills)
    killed = {pid for _, pid in kills}
    for task_id in report.duplicated:
        runs = ledger.successes()[task_id]
        assert any(r.pid in killed for r in runs[:-1]), (task_id, runs)
    # every orphan (started on a killed worker, not finished there) ran again; reclaimed
    # orphans queue behind the backlog (FIFO within a priority), so the delay is reported
    delays = orphan_delays(ledger, kills)
    print(f"orphans re-run: {len(delays)}, longest wait {max(delays, default=0):.1f} s")
    fault_totals(report, workers.faults)


def mixed(seed: int, count: int, prefix: str) -> list[tuple[str, dict[str, Any]]]:
    """70 % succeed, 15 % fail once then succeed (a retry), 15 % fail for good (the DLQ)."""
    rng = random.Random(seed)
    out = []
    for task_id, payload in payloads(seed, count, prefix):
        roll = rng.random()
        if roll < 0.15:
            payload["fail"] = 1
        elif roll < 0.30:
            payload["first_outcome"] = "dead"
        out.append((task_id, payload))
    return out


@pytest.mark.timeout(60)
@pytest.mark.parametrize("step", CRASH_STEPS)
async def test_a_crash_at_each_step_of_claim_and_settle_loses_nothing(
    step: str,
    fault_redis: FaultRedis,
    queue_factory: Factory,
    workers_factory: Factory,
    ledger: Ledger,
    fault_totals: Factory,
) -> None:
    """Case 2: the engine's debug hook (AGENTIC_DEBUG_CRASH_AT) exits the worker just before
    or just after a claim, a settle (completions, retries and dead-letterings in one batch)
    or a hand-back on shutdown. A clean worker then finishes: nothing is popped but
    nowhere, and only tasks whose lease the crash took run twice."""
    q = await queue_factory(fault_redis)
    workers = workers_factory(fault_redis, lease=1.0, concurrency=10, grace=0.2)
    releasing = step.startswith("release")
    tasks = mixed(2, 300, "s")
    if releasing:  # long first attempts, so a stop finds them running
        tasks = [(i, {**p, "first_ms": 3000}) for i, p in tasks[:20]] + tasks[20:]
    acked = await enqueue_all(q, ledger.producer(), tasks)
    crasher = workers.start(AGENTIC_DEBUG_CRASH_AT=f"{step}:{2 if releasing else 3}")
    workers.faults += 1
    if releasing:
        assert await poll(lambda: value(len(ledger.by_pid(crasher.pid)) >= 10), timeout=20)
        workers.terminate(crasher)
    assert await workers.wait_exit(crasher, 20) == CRASH_EXIT_CODE, workers.logs()
    workers.start()
    assert await drained(q, acked, timeout=40), await q.get_queue_size()
    assert await workers.stop_all() == [0]
    report = await reconcile(q, ledger)
    report.assert_standard_pass(workers.logs())
    assert report.final["completed"] + report.final["dead_letter"] == acked
    if step in ("claim.after", "settle.before", "release.before"):
        # the crash orphaned leased tasks: they were reclaimed, not lost
        assert report.counters.get("reclaimed", 0) > 0
    fault_totals(report, workers.faults)


@pytest.mark.timeout(90)
async def test_a_poison_task_that_kills_its_worker_is_dead_lettered_and_the_rest_flow(
    fault_redis: FaultRedis,
    queue_factory: Factory,
    workers_factory: Factory,
    ledger: Ledger,
    fault_totals: Factory,
) -> None:
    """Case 5: one task os._exit()s its worker on every attempt among 600 good ones, 3
    workers restarted as they die. After max_lease_losses (2) recoveries it is dead-lettered
    with the reason; the good tasks complete; restarts stop there (no crash loop)."""
    q = await queue_factory(fault_redis, max_lease_losses=2)
    workers = workers_factory(fault_redis, lease=0.5, max_lease_losses=2, concurrency=5)
    tasks = payloads(5, 600, "g")
    tasks.insert(50, ("poison", {"crash": True}))
    acked = await enqueue_all(q, ledger.producer(), tasks)
    for _ in range(3):
        workers.start()
    restarts = 0

    async def settled() -> bool:
        nonlocal restarts
        for proc in list(workers.procs):
            if proc.poll() is not None and proc.returncode == 3:
                workers.procs.remove(proc)
                restarts += 1
                workers.start()
        return await drained(q, acked, timeout=0)

    assert await poll(settled, timeout=60), await q.get_queue_size()

    async def all_serving() -> bool:  # a worker restarted just now may still be importing:
        # a SIGTERM before it installed its handlers would kill it (-15), not stop it
        serving = {w.pid for w in await list_workers(q) if w.alive}
        return all(proc.pid in serving for proc in workers.alive())

    assert await poll(all_serving, timeout=30)
    assert await workers.stop_all() == [0, 0, 0]
    poison = await q.get_task("poison")
    assert poison is not None and poison.state == "dead_letter"
    assert "lease lost 3 times" in (poison.error or "")
    starts = [r for r in ledger.runs() if r.task_id == "poison" and r.kind == "start"]
    assert len(starts) == restarts == 3  # one crash per recovery, then never again
    report = await reconcile(q, ledger)
    report.assert_standard_pass(workers.logs())
    assert report.final == {"completed": 600, "dead_letter": 1}
    # a task that ran beside the poison was taken down with it at most twice: after two
    # lost leases a task is a suspect and runs apart from other suspects
    async with q.redis.pipeline(transaction=False) as pipe:
        for task_id, _ in tasks:
            pipe.hget(q.keys.task(task_id), "lease_losses")
        losses = [int(v or 0) for v in await pipe.execute()]
    assert max(losses[:50] + losses[51:]) <= 2
    fault_totals(report, restarts)


@pytest.mark.timeout(60)
async def test_a_stale_worker_resumed_after_its_lease_has_every_write_rejected(
    fault_redis: FaultRedis,
    queue_factory: Factory,
    workers_factory: Factory,
    ledger: Ledger,
    fault_totals: Factory,
) -> None:
    """Case 6: worker A runs 6 tasks that would complete, retry or dead-letter; it is
    SIGSTOPped past its lease; B completes them (and 200 more); A resumes. A's completions,
    retries and dead-letterings are all rejected by fencing: B's results stand, no retry or
    dead-lettering is counted, and each of the 6 shows one lost lease."""
    q = await queue_factory(fault_redis)
    workers = workers_factory(fault_redis, lease=1.0, concurrency=10)
    outcomes = ["ok", "fail", "dead"] * 2
    stale = [(f"stale-{i}", {"first_ms": 2000, "first_outcome": o}) for i, o in enumerate(outcomes)]
    writer = ledger.producer()
    await enqueue_all(q, writer, stale)
    a = workers.start()
    assert await poll(lambda: value(len(ledger.by_pid(a.pid)) >= 6), timeout=20)
    workers.freeze(a)
    frozen_at = time.monotonic()
    try:
        b = workers.start()
        acked = 6 + await enqueue_all(q, writer, payloads(6, 200, "n"))
        assert await drained(q, acked, timeout=30), await q.get_queue_size()
        # stopped past the end of A's first attempts: on SIGCONT they all finish at once,
        # before A's lease keeper can tell A the leases are gone, so A tries every write
        await asyncio.sleep(max(0.0, frozen_at + 2.5 - time.monotonic()))
    finally:
        workers.thaw(a)
    log_path = ledger.root / "worker-1.log"
    assert await poll(lambda: value(log_path.read_text().count("rejected") >= 6), timeout=10)
    assert await workers.stop_all() == [0, 0]
    for task_id, _ in stale:
        task = await q.get_task(task_id)
        assert task is not None and task.state == "completed", task
        assert task.result["pid"] == b.pid and task.lease_losses == 1 and task.retry_count == 0
    stats = await q.get_statistics()
    assert stats["total_retried"] == 0 and stats["total_dead_lettered"] == 0
    assert stats["total_completed"] == acked
    log = log_path.read_text()
    assert "done=0, failed=0, lost=6" in log, log  # A recorded nothing, lost all six
    for task_id, _ in stale:
        assert f"result of {task_id} rejected" in log
    report = await reconcile(q, ledger)
    report.assert_standard_pass(workers.logs())
    assert set(report.duplicated) == {"stale-0", "stale-3"}  # A's and B's successful runs
    fault_totals(report, workers.faults)
