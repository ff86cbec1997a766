"""Workers as real processes: signals, crashes, stalls and the supervisor."""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from tests.support.processes import (
    WorkerProcesses,
    eventually,
    ledger_lines,
    wait_exit,
    worker_processes,
)
from tests.support.state import assert_single_state
from utils.redis_queue import RedisTaskQueue, TaskState
from utils.redis_queue.registry import list_workers

QueueFactory = Callable[..., RedisTaskQueue]
pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def workers(redis_url: str, queue_name: str) -> Iterator[WorkerProcesses]:
    with worker_processes(redis_url, queue_name) as procs:
        yield procs


def _starts(ledger: Path) -> Counter[str]:
    return Counter(line[1] for line in ledger_lines(ledger) if line[0] == "start")


async def test_sigterm_drains_running_tasks_and_exits_zero(
    queue: RedisTaskQueue, workers: WorkerProcesses, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    await queue.enqueue_many(
        {
            "task_id": f"t{i}",
            "task_type": "sleep",
            "payload": {"seconds": 0.3, "ledger": str(ledger)},
        }
        for i in range(20)
    )
    proc = workers.start("--concurrency", "5", "--grace", "10")
    await eventually(lambda: _async(len(_starts(ledger)) >= 5))
    proc.send_signal(signal.SIGTERM)
    assert await wait_exit(proc, 15) == 0
    sizes = await queue.get_queue_size()
    assert sizes["processing"] == 0  # everything it started, it finished
    finisher = workers.start("--burst")
    assert await wait_exit(finisher, 30) == 0
    assert (await queue.get_queue_size())["completed"] == 20
    done = Counter(line[1] for line in ledger_lines(ledger) if line[0] == "done")
    assert len(done) == 20 and set(done.values()) == {1}  # none lost, none run twice


async def test_sigterm_with_short_grace_hands_tasks_back_uncounted(
    queue: RedisTaskQueue, raw_redis: Redis, workers: WorkerProcesses, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    await queue.enqueue("long", "sleep", {"seconds": 60, "ledger": str(ledger)})
    proc = workers.start("--grace", "0.5")
    await eventually(lambda: _async(_starts(ledger)["long"] == 1))
    proc.send_signal(signal.SIGTERM)
    assert await wait_exit(proc, 10) == 0
    await assert_single_state(raw_redis, queue, "long", "pending")
    task = await queue.get_task("long")
    assert task is not None and task.attempts == 0 and task.retry_count == 0


async def test_handler_blocking_the_loop_for_3x_the_lease_is_not_reclaimed(
    queue: RedisTaskQueue, workers: WorkerProcesses, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    await queue.enqueue("blocker", "block", {"seconds": 3, "ledger": str(ledger)})
    workers.start("--concurrency", "1", lease=1.0)
    await eventually(lambda: _async(_starts(ledger)["blocker"] == 1))
    rival = workers.start("--concurrency", "1", lease=1.0)  # would steal a lapsed lease
    assert await queue.wait_for_result("blocker", timeout=20) == "blocked"
    assert _starts(ledger) == Counter({"blocker": 1})
    task = await queue.get_task("blocker")
    assert task is not None and task.lease_losses == 0 and task.attempts == 1
    assert rival.poll() is None


async def test_task_of_a_sigkilled_worker_is_rerun_by_another_after_lease_expiry(
    queue: RedisTaskQueue, workers: WorkerProcesses, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    await queue.enqueue("orphan", "sleep_first", {"seconds": 60, "ledger": str(ledger)})
    victim = workers.start(lease=1.0)
    await eventually(lambda: _async(_starts(ledger)["orphan"] == 1))
    os.killpg(victim.pid, signal.SIGKILL)
    await wait_exit(victim, 5)
    rescuer = workers.start(lease=1.0)
    result = await queue.wait_for_result("orphan", timeout=20)
    assert result == {"pid": rescuer.pid, "attempt": 2}
    task = await queue.get_task("orphan")
    assert task is not None and task.lease_losses == 1


async def test_late_completion_of_a_stopped_worker_is_rejected(
    queue: RedisTaskQueue, workers: WorkerProcesses, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    await queue.enqueue("stale", "sleep_first", {"seconds": 2, "ledger": str(ledger)})
    sleeper = workers.start(lease=1.0)
    await eventually(lambda: _async(_starts(ledger)["stale"] == 1))
    os.kill(sleeper.pid, signal.SIGSTOP)
    try:
        rescuer = workers.start(lease=1.0)
        assert await queue.wait_for_result("stale", timeout=20) == {
            "pid": rescuer.pid,
            "attempt": 2,
        }
    finally:
        os.kill(sleeper.pid, signal.SIGCONT)

    sleeper.send_signal(signal.SIGTERM)
    assert await wait_exit(sleeper, 10) == 0
    # After SIGCONT the stale worker either learns of the lost lease and abandons the
    # handler, or finishes it and has its completion rejected: the rescuer's result stands.
    task = await queue.get_task("stale")
    assert task is not None and task.state == TaskState.COMPLETED
    assert task.result == {"pid": rescuer.pid, "attempt": 2} and task.lease_losses == 1
    stats = await queue.get_statistics()
    assert stats["total_completed"] == 1


async def test_supervisor_restarts_a_crashed_child(
    queue: RedisTaskQueue, workers: WorkerProcesses
) -> None:
    supervisor = workers.start("--processes", "2", "--concurrency", "2")

    async def pids() -> set[int]:
        alive = {w.pid for w in await list_workers(queue) if w.alive}
        return alive if len(alive) == 2 else set()

    first = await eventually(pids)
    os.kill(next(iter(first)), signal.SIGKILL)

    async def replaced() -> bool:
        now = {w.pid for w in await list_workers(queue) if w.alive}
        return len(now - first) == 1 and len(now & first) == 1

    await eventually(replaced, timeout=20)
    supervisor.send_signal(signal.SIGTERM)
    assert await wait_exit(supervisor, 20) == 0


async def test_crashing_handler_is_dead_lettered_after_repeated_lease_losses(
    make_queue: QueueFactory, workers: WorkerProcesses, tmp_path: Path
) -> None:
    queue = make_queue(max_lease_losses=1, lease_seconds=0.5)
    await queue.connect()
    ledger = tmp_path / "ledger"
    await queue.enqueue("poison", "crash", {"ledger": str(ledger)})
    await queue.enqueue("fine", "noop", {"value": 1})
    supervisor = workers.start("--processes", "1", lease=0.5, AGENTIC_MAX_LEASE_LOSSES="1")
    del supervisor  # one process, restarted by nobody: use a supervisor of 2 instead
    supervisor = workers.start(
        "--processes", "2", "--concurrency", "1", lease=0.5, AGENTIC_MAX_LEASE_LOSSES="1"
    )
    assert await queue.wait_for_result("fine", 20) == {"echo": 1}

    async def dead_lettered() -> bool:
        task = await queue.get_task("poison")
        return task is not None and task.state == TaskState.DEAD_LETTER

    await eventually(dead_lettered, timeout=30)
    task = await queue.get_task("poison")
    assert task is not None and "lease lost 2 times" in (task.error or "")
    supervisor.send_signal(signal.SIGTERM)
    await wait_exit(supervisor, 20)


async def _async(value: object) -> object:
    return value


async def test_a_killed_lease_keeper_is_replaced_and_leases_stay_alive(
    queue: RedisTaskQueue, workers: WorkerProcesses, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    await queue.enqueue("kept", "sleep", {"seconds": 4, "ledger": str(ledger)})
    worker = workers.start("--concurrency", "1", lease=2.0)
    await eventually(lambda: _async(_starts(ledger)["kept"] == 1))
    keepers = _children(worker.pid)
    assert len(keepers) == 1
    os.kill(keepers[0], signal.SIGKILL)
    assert await queue.wait_for_result("kept", timeout=20) == "slept"
    task = await queue.get_task("kept")
    assert task is not None and task.lease_losses == 0 and task.attempts == 1
    assert len(_children(worker.pid)) == 1  # a new keeper took over


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []
