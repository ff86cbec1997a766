"""`agentic worker -p 3` under real signals, sent the way a terminal (the process group),
systemd or an operator (one pid) sends them, with tasks flowing; and processes that must
die with their parent (a pool's children, `pipeline run`'s workers, the QA step's command).

After each: the exit code, no process of the tree left, nothing in processing beyond what
lease expiry recovers, no stale registry entry, and every task done exactly once."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.supervisor import STOP_MARGIN_SECONDS
from tests.support.pipeline import EXAMPLE
from tests.support.process_tree import (
    children,
    cmdline,
    descendants,
    running,
    session_members,
)
from tests.support.processes import (
    WorkerProcesses,
    agentic_argv,
    eventually,
    ledger_lines,
    wait_exit,
    worker_processes,
)
from utils.redis_queue import RedisTaskQueue
from utils.redis_queue.registry import list_workers

pytestmark = pytest.mark.timeout(120)

TASKS = 150
TASK_SECONDS = 0.4
GRACE = 4.0
POOL = 3
CONCURRENCY = 2


@pytest.fixture
def workers(redis_url: str, queue_name: str) -> Iterator[WorkerProcesses]:
    with worker_processes(redis_url, queue_name) as procs:
        yield procs


async def _true(value: object) -> object:
    return value


def _lines(ledger: Path, tag: str) -> Counter[str]:
    return Counter(line[1] for line in ledger_lines(ledger) if line[0] == tag)


def _start(
    workers: WorkerProcesses, log: Path, *args: str, lease: float = 30.0
) -> subprocess.Popen[bytes]:
    """`agentic worker ARGS` in a session of its own, its log (stderr) in `log`."""
    argv = agentic_argv("worker", "--app", "tests.support.worker_apps:registry", *args)
    env = workers.env(AGENTIC_LEASE_SECONDS=str(lease), AGENTIC_LOG_LEVEL="INFO")
    with log.open("ab") as stderr:
        return workers.spawn(argv, env, stderr=stderr)


async def _flowing_pool(
    queue: RedisTaskQueue, workers: WorkerProcesses, tmp_path: Path, lease: float = 30.0
) -> subprocess.Popen[bytes]:
    """`agentic worker -p 3 -c 2` serving a steady stream of sleep tasks: returned once
    every child is registered and each has tasks running."""
    ledger = tmp_path / "ledger"
    await queue.enqueue_many(
        {
            "task_id": f"t{i}",
            "task_type": "sleep",
            "payload": {"seconds": TASK_SECONDS, "ledger": str(ledger)},
        }
        for i in range(TASKS)
    )
    pool = _start(
        workers, tmp_path / "log", "-p", str(POOL), "-c", str(CONCURRENCY),
        "--grace", str(GRACE), lease=lease,
    )  # fmt: skip
    await eventually(lambda: _pool_of_size(queue, pool, POOL), timeout=30)
    await eventually(lambda: _true(len(_lines(ledger, "start")) >= POOL * CONCURRENCY))
    return pool


async def _pool_of_size(queue: RedisTaskQueue, pool: subprocess.Popen[bytes], size: int) -> bool:
    """`size` live children, each one registered and beating (and nobody else), each with
    its lease keeper started."""
    kids = set(children(pool.pid))
    registered = {w.pid for w in await list_workers(queue) if w.alive}
    return len(kids) == size and registered == kids and all(children(k) for k in kids)


async def _in_flight(queue: RedisTaskQueue) -> int:
    return int((await queue.get_queue_size())["processing"])


async def _assert_tree_gone(sid: int, tree: list[int], timeout: float = 5.0) -> None:
    """Nothing left of session `sid` nor of `tree` (its processes, seen while it ran)."""

    def gone() -> bool:
        return not session_members(sid) and not any(running(pid) for pid in tree)

    await eventually(lambda: _true(gone()), timeout=timeout)


async def _assert_every_task_done_once(
    queue: RedisTaskQueue, workers: WorkerProcesses, tmp_path: Path
) -> None:
    """A burst worker finishes what is left: every task completes, none ran to its end
    twice (a graceful stop finished or handed back everything it had)."""
    finisher = _start(workers, tmp_path / "finisher.log", "--burst", "-c", "75")
    assert await wait_exit(finisher, 60) == 0
    sizes = await queue.get_queue_size()
    assert sizes["completed"] == TASKS and sizes["processing"] == 0
    done = _lines(tmp_path / "ledger", "done")
    assert len(done) == TASKS and set(done.values()) == {1}


@pytest.mark.parametrize(
    ("signum", "to_group"),
    [(signal.SIGINT, True), (signal.SIGTERM, True), (signal.SIGHUP, False)],
    ids=["SIGINT-to-group", "SIGTERM-to-group", "SIGHUP-to-parent"],
)
async def test_one_signal_is_one_graceful_stop_of_the_whole_pool(
    queue: RedisTaskQueue,
    workers: WorkerProcesses,
    tmp_path: Path,
    signum: signal.Signals,
    to_group: bool,
) -> None:
    pool = await _flowing_pool(queue, workers, tmp_path)
    in_flight = await _in_flight(queue)
    tree = descendants(pool.pid)
    assert len(tree) == 2 * POOL  # the children and their lease keepers
    sent = time.monotonic()
    if to_group:  # a terminal's Ctrl-C, systemd's stop: every process gets it
        os.killpg(pool.pid, signum)
    else:
        pool.send_signal(signum)
    assert await wait_exit(pool, GRACE + STOP_MARGIN_SECONDS + 10) == 0
    took = time.monotonic() - sent
    assert took < GRACE  # the running tasks (0.4 s) finished: nobody waited for a kill
    await _assert_tree_gone(pool.pid, tree)
    assert await _in_flight(queue) == 0
    assert await list_workers(queue) == []  # every child left the registry
    log = (tmp_path / "log").read_text()
    assert f"{signal.Signals(signum).name}: stopping" in log
    assert "Traceback" not in log and "exiting now" not in log
    print(f"\n{signal.Signals(signum).name}: {in_flight} in flight, exit 0 after {took:.2f} s")
    await _assert_every_task_done_once(queue, workers, tmp_path)


async def test_sigterm_to_one_child_is_a_graceful_exit_and_the_pool_size_is_restored(
    queue: RedisTaskQueue, workers: WorkerProcesses, tmp_path: Path
) -> None:
    pool = await _flowing_pool(queue, workers, tmp_path)
    victim = children(pool.pid)[0]
    os.kill(victim, signal.SIGTERM)
    await eventually(lambda: _true(not running(victim)), timeout=GRACE + 5)

    async def restored() -> bool:
        return victim not in children(pool.pid) and await _pool_of_size(queue, pool, POOL)

    await eventually(restored, timeout=15)
    tree = descendants(pool.pid)
    pool.send_signal(signal.SIGTERM)
    assert await wait_exit(pool, GRACE + STOP_MARGIN_SECONDS + 10) == 0
    await _assert_tree_gone(pool.pid, tree)
    assert await _in_flight(queue) == 0 and await list_workers(queue) == []
    await _assert_every_task_done_once(queue, workers, tmp_path)


async def test_a_stopped_child_is_killed_after_the_grace_and_its_tasks_recovered(
    queue: RedisTaskQueue, workers: WorkerProcesses, tmp_path: Path
) -> None:
    pool = await _flowing_pool(queue, workers, tmp_path, lease=2.0)
    frozen = children(pool.pid)[0]
    tree = descendants(pool.pid)
    os.kill(frozen, signal.SIGSTOP)
    sent = time.monotonic()
    pool.send_signal(signal.SIGTERM)
    assert await wait_exit(pool, GRACE + STOP_MARGIN_SECONDS + 10) == 1  # one was killed
    took = time.monotonic() - sent
    assert GRACE <= took < GRACE + STOP_MARGIN_SECONDS + 2
    await _assert_tree_gone(pool.pid, tree)
    assert (
        await _in_flight(queue) <= CONCURRENCY
    )  # only the frozen child's, until its leases expire
    assert [w.pid for w in await list_workers(queue)] in ([], [frozen])
    print(f"\nSIGSTOPped child: the parent exited 1 after {took:.2f} s (grace {GRACE} s)")
    await _assert_every_task_done_once(queue, workers, tmp_path)


async def test_kill_9_of_the_parent_stops_every_child_gracefully(
    queue: RedisTaskQueue, workers: WorkerProcesses, tmp_path: Path
) -> None:
    pool = await _flowing_pool(queue, workers, tmp_path)
    tree = descendants(pool.pid)
    sent = time.monotonic()
    os.kill(pool.pid, signal.SIGKILL)
    assert await wait_exit(pool, 5) == -signal.SIGKILL
    await _assert_tree_gone(pool.pid, tree, timeout=GRACE + STOP_MARGIN_SECONDS)
    took = time.monotonic() - sent
    # the children got SIGTERM from the kernel: they finished and handed back their tasks
    assert await _in_flight(queue) == 0 and await list_workers(queue) == []
    print(f"\nkill -9 of the parent: its children were gone {took:.2f} s later")
    await _assert_every_task_done_once(queue, workers, tmp_path)


async def test_a_single_worker_stops_gracefully_on_sighup_and_says_so(
    queue: RedisTaskQueue, workers: WorkerProcesses, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    await queue.enqueue_many(
        {
            "task_id": f"t{i}",
            "task_type": "sleep",
            "payload": {"seconds": 0.4, "ledger": str(ledger)},
        }
        for i in range(20)
    )
    worker = _start(workers, tmp_path / "log", "-c", "3", "--grace", str(GRACE))
    await eventually(lambda: _true(len(_lines(ledger, "start")) >= 3), timeout=20)
    tree = descendants(worker.pid)
    worker.send_signal(signal.SIGHUP)
    assert await wait_exit(worker, GRACE + 5) == 0
    await _assert_tree_gone(worker.pid, tree)
    assert await _in_flight(queue) == 0 and await list_workers(queue) == []
    assert "SIGHUP: stopping (grace 4.0 s)" in (tmp_path / "log").read_text()


async def test_a_live_worker_id_is_refused_and_pool_children_get_ids_of_their_own(
    queue: RedisTaskQueue, workers: WorkerProcesses, tmp_path: Path
) -> None:
    first = _start(workers, tmp_path / "first.log", "--worker-id", "w")

    async def registered(ids: set[str]) -> bool:
        return {w.worker_id for w in await list_workers(queue) if w.alive} == ids

    await eventually(lambda: registered({"w"}), timeout=20)
    second = _start(workers, tmp_path / "second.log", "--worker-id", "w")
    assert await wait_exit(second, 20) == 2
    assert "worker id 'w' is in use by a live worker" in (tmp_path / "second.log").read_text()
    (entry,) = await list_workers(queue)
    assert entry.pid == first.pid and entry.alive  # the refused one neither took nor removed it

    pool = _start(workers, tmp_path / "pool.log", "-p", "3", "--worker-id", "w")
    await eventually(lambda: registered({"w", "w.1", "w.2", "w.3"}), timeout=30)
    twin = _start(workers, tmp_path / "twin.log", "-p", "2", "--worker-id", "w")
    assert await wait_exit(twin, 30) == 2  # its children's ids are in use: no restart loop
    # Whichever child is refused first stops the pool, its twin maybe before it logged.
    assert re.search(r"worker id 'w\.[12]' is in use", (tmp_path / "twin.log").read_text())
    for proc in (pool, first):
        proc.send_signal(signal.SIGTERM)
        assert await wait_exit(proc, 20) == 0
    assert await list_workers(queue) == []


async def test_pipeline_run_killed_with_9_leaves_no_worker(
    redis_url: str, queue_name: str, workers: WorkerProcesses, tmp_path: Path
) -> None:
    argv = agentic_argv("pipeline", "run", str(EXAMPLE / "spec.json"), "--workers", "yes")
    env = workers.env(
        AGENTIC_PIPELINE__WORKSPACE_ROOT=str(tmp_path / "workspaces"),
        AGENTIC_PIPELINE__DEPLOY_DIR=str(tmp_path / "deploy"),
    )
    manager = workers.spawn(argv, env, stdout=subprocess.DEVNULL)

    def ready() -> list[int]:  # each stage's worker up: it started its lease keeper
        stage_workers = [p for p in children(manager.pid) if "worker" in cmdline(p)]
        up = len(stage_workers) == 4 and all(children(p) for p in stage_workers)
        return stage_workers if up else []

    await eventually(lambda: _true(ready()), timeout=30)
    tree = descendants(manager.pid)
    os.kill(manager.pid, signal.SIGKILL)
    assert await wait_exit(manager, 5) == -signal.SIGKILL
    await _assert_tree_gone(manager.pid, tree, timeout=20)  # their grace is 10 s


async def test_the_qa_steps_test_process_and_what_it_started_die_with_their_worker(
    queue: RedisTaskQueue, workers: WorkerProcesses, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    await queue.enqueue("qa", "qa_like", {"ledger": str(ledger)})
    worker = _start(workers, tmp_path / "log")

    def started() -> list[int]:
        pids = [int(line[1]) for line in ledger_lines(ledger) if "child" in line[0]]
        return pids if len(pids) == 2 else []

    pids = await eventually(lambda: _true(started()), timeout=20)
    assert all(os.getsid(pid) != worker.pid for pid in pids)  # a session of their own
    os.kill(worker.pid, signal.SIGKILL)
    assert await wait_exit(worker, 5) == -signal.SIGKILL
    await eventually(lambda: _true(not any(running(pid) for pid in pids)), timeout=5)


async def test_a_worker_stopped_while_it_starts_exits_0_having_claimed_nothing(
    queue: RedisTaskQueue, workers: WorkerProcesses, tmp_path: Path
) -> None:
    await queue.enqueue("waiting", "noop", {"value": 1})
    marker = tmp_path / "importing"
    argv = agentic_argv("worker", "--app", "tests.support.slow_app:registry")
    env = workers.env(SLOW_APP_MARKER=str(marker), AGENTIC_LOG_LEVEL="INFO")
    with (tmp_path / "log").open("ab") as stderr:
        worker = workers.spawn(argv, env, stderr=stderr)
    await eventually(lambda: _true(marker.exists()), timeout=20)
    os.killpg(worker.pid, signal.SIGTERM)  # before its event loop's handlers exist
    assert await wait_exit(worker, 10) == 0
    assert "SIGTERM: stopping" in (tmp_path / "log").read_text()
    assert (await queue.get_queue_size())["pending"] == 1 and await list_workers(queue) == []
