"""Limits hold for a fleet: several `agentic worker` processes against one queue, observed
from the handlers' own wall-clock stamps (tests.support.worker_apps "stamp"/"provider")."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import (
    WorkerProcesses,
    eventually,
    ledger_lines,
    most_at_once,
    wait_exit,
    worker_processes,
)
from utils.redis_queue import RedisTaskQueue

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def workers(redis_url: str, queue_name: str) -> Iterator[WorkerProcesses]:
    with worker_processes(redis_url, queue_name) as procs:
        yield procs


def _stamps(ledger: Path, tag: str) -> list[tuple[str, float, int]]:
    return [
        (line[1], float(line[2]), int(line[3])) for line in ledger_lines(ledger) if line[0] == tag
    ]


async def _async(value: object) -> object:
    return value


async def _run_to_the_end(
    workers: WorkerProcesses, count: int, *args: str, lease: float = 30
) -> list[int]:
    procs = [workers.start("--burst", *args, lease=lease) for _ in range(count)]
    return [await wait_exit(p, 60) for p in procs]


async def test_a_rate_holds_across_three_worker_processes(
    queue: RedisTaskQueue, workers: WorkerProcesses, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    await queue.set_limit("stamp", rate=20, per=1)  # burst: 20
    await queue.enqueue_many(
        {"task_id": f"t{i}", "task_type": "stamp", "payload": {"ledger": str(ledger)}}
        for i in range(100)
    )
    assert await _run_to_the_end(workers, 3, "--concurrency", "10") == [0, 0, 0]
    starts = sorted(t for _, t, _ in _stamps(ledger, "start"))
    assert len(starts) == 100
    assert starts[-1] - starts[0] >= 3.8  # 20 at once, then 80 at 20/s
    for i, start in enumerate(starts):  # no 1-second window holds more than burst + rate
        assert sum(1 for s in starts[i:] if s < start + 1.0) <= 40
    assert len({pid for _, _, pid in _stamps(ledger, "start")}) >= 2


async def test_concurrency_two_over_three_workers_never_runs_three(
    queue: RedisTaskQueue, workers: WorkerProcesses, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    await queue.set_limit("stamp", concurrency=2)
    await queue.enqueue_many(
        {
            "task_id": f"t{i}",
            "task_type": "stamp",
            "payload": {"ledger": str(ledger), "seconds": 0.1},
        }
        for i in range(24)
    )
    assert await _run_to_the_end(workers, 3, "--concurrency", "4") == [0, 0, 0]
    assert most_at_once(ledger) == (2, 48)
    assert (await queue.get_queue_size())["completed"] == 24


async def test_a_killed_workers_slot_comes_back_when_its_lease_expires(
    queue: RedisTaskQueue, workers: WorkerProcesses, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    await queue.set_limit("sleep_first", concurrency=1)
    await queue.enqueue_many(  # t0 hangs on its first attempt, the others are quick
        {
            "task_id": f"t{i}",
            "task_type": "sleep_first",
            "payload": {"ledger": str(ledger), "seconds": 30 if i == 0 else 0.1},
        }
        for i in range(3)
    )
    doomed = workers.start("--concurrency", "3", lease=1.0)
    await eventually(lambda: _async(ledger_lines(ledger)))
    workers.kill(doomed)  # holding the only slot, forever
    assert (await queue.get_limits())["sleep_first"].running == 1
    assert await _run_to_the_end(workers, 1, "--concurrency", "3") == [0]
    assert (await queue.get_queue_size())["completed"] == 3
    assert (await queue.get_limits())["sleep_first"].running == 0


async def test_rate_limited_pauses_every_worker_then_all_resume(
    queue: RedisTaskQueue, workers: WorkerProcesses, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    await queue.set_limit("openai", concurrency=6)
    payload = {
        "ledger": str(ledger),
        "refuse": "p0",
        "retry_after": 1.5,
        "limit": "openai",
        "seconds": 0.05,
    }
    await queue.enqueue_many(
        {"task_id": f"p{i}", "task_type": "provider", "payload": payload, "limits": ["openai"]}
        for i in range(40)
    )
    assert await _run_to_the_end(workers, 3, "--concurrency", "2") == [0, 0, 0]
    (refused_at,) = [t for _, t, _ in _stamps(ledger, "refused")]
    starts = _stamps(ledger, "start")
    during = [t for _, t, _ in starts if refused_at + 0.2 < t < refused_at + 1.4]
    assert during == []  # nobody, in any process, called the provider while it was paused
    after = [(task, pid) for task, t, pid in starts if t >= refused_at + 1.4]
    assert len({pid for _, pid in after}) >= 2  # and then they all went back to work
    p0 = await queue.get_task("p0")
    assert p0 is not None and p0.state == "completed"
    assert (p0.attempts, p0.retry_count) == (1, 0)  # the refused attempt did not count
    assert (await queue.get_queue_size())["completed"] == 40


async def test_token_budget_reconciles_to_what_handlers_report(
    queue: RedisTaskQueue, workers: WorkerProcesses, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    await queue.set_limit("openai", tokens=1000, per=3600)
    payload = {"ledger": str(ledger), "used": 100}
    await queue.enqueue_many(
        {
            "task_id": f"p{i}",
            "task_type": "provider",
            "payload": payload,
            "limits": ["openai"],
            "cost_tokens": 400,
        }
        for i in range(7)
    )
    # Reserved at 400 each, only two fit in the hour's 1,000 without reconciling; each
    # gives 300 back when it reports 100, so all seven run (the last one when 400 are left).
    assert await _run_to_the_end(workers, 2, "--concurrency", "4") == [0, 0]
    assert (await queue.get_queue_size())["completed"] == 7
    left = (await queue.get_limits())["openai"].tokens_available
    assert left == pytest.approx(300, abs=5)


async def test_a_saturated_limit_does_not_slow_unlimited_types(
    queue: RedisTaskQueue, workers: WorkerProcesses, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    await queue.set_limit("stamp", concurrency=1)
    await queue.enqueue_many(
        {
            "task_id": f"s{i}",
            "task_type": "stamp",
            "payload": {"ledger": str(ledger), "seconds": 1},
            "priority": 3,
        }
        for i in range(10)
    )
    await queue.enqueue_many(
        {"task_id": f"n{i}", "task_type": "noop", "payload": {}, "priority": 0} for i in range(300)
    )
    proc = workers.start("--concurrency", "8")
    try:

        async def noops_done() -> bool:
            done = 0
            for i in range(0, 300, 30):
                task = await queue.get_task(f"n{i}")
                done += task is not None and task.state == "completed"
            return done == 10

        await eventually(noops_done, timeout=20)
        assert len(_stamps(ledger, "start")) <= 4  # the limited ones still trickle, 1 at a time
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        await wait_exit(proc, 30)


async def test_a_small_group_finishes_within_its_share_across_worker_processes(
    queue: RedisTaskQueue, workers: WorkerProcesses, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    payload = {"ledger": str(ledger)}
    await queue.enqueue_many(
        {"task_id": f"big{i}", "task_type": "stamp", "payload": payload, "group": "tenant:big"}
        for i in range(1000)
    )
    await queue.enqueue_many(
        {"task_id": f"small{i}", "task_type": "stamp", "payload": payload, "group": "tenant:small"}
        for i in range(10)
    )
    assert await _run_to_the_end(workers, 2, "--concurrency", "5") == [0, 0]
    starts = sorted(_stamps(ledger, "start"), key=lambda s: s[1])
    assert len(starts) == 1010
    position = {task: i for i, (task, _, _) in enumerate(starts)}
    assert max(position[f"small{i}"] for i in range(10)) < 60  # not behind the 1,000
