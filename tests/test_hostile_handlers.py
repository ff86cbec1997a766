"""Whatever a handler raises or ignores, its task is settled, the tasks beside it go on,
and the worker keeps serving (in process, and as an `agentic worker --burst` process)."""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from tests.support.processes import ROOT, agentic_argv, agentic_env, eventually, wait_exit
from tests.support.redis_server import RedisServer, free_port
from tests.support.state import assert_every_task_in_one_state
from tests.support.worker_apps import registry
from utils.redis_queue import RedisTaskQueue, TaskState, Worker, handler_run

QueueFactory = Callable[..., RedisTaskQueue]
pytestmark = pytest.mark.timeout(60)

BAD = ["sys_exit", "interrupt", "sync_exit", "unprintable"]


async def test_system_exit_interrupts_and_unprintable_errors_fail_only_their_task(
    make_queue: QueueFactory, raw_redis: Redis
) -> None:
    queue = make_queue(max_retries=0)
    await queue.connect()
    await queue.enqueue_many(
        [{"task_id": f"bad-{t}", "task_type": t, "payload": {}} for t in BAD]
        + [{"task_id": f"ok-{i}", "task_type": "noop", "payload": {}} for i in range(8)]
    )
    stats = await asyncio.wait_for(Worker(queue, registry, concurrency=4, burst=True).run(), 30)
    assert stats.done == 8 and stats.failed == len(BAD)
    for kind in BAD:
        task = await queue.get_task(f"bad-{kind}")
        assert task is not None and task.state == TaskState.DEAD_LETTER, kind
        assert task.error
    errors = {t: (await queue.get_task(f"bad-{t}")).error or "" for t in BAD}  # type: ignore[union-attr]
    assert errors["sys_exit"].startswith("HandlerExit: the handler raised SystemExit: 3")
    assert errors["interrupt"].startswith("HandlerExit: the handler raised KeyboardInterrupt")
    assert errors["sync_exit"].startswith("SystemExit: from a thread")
    assert errors["unprintable"].startswith("Unprintable (its str() raised RuntimeError)")
    await assert_every_task_in_one_state(raw_redis, queue)


async def test_a_handler_that_swallows_cancellation_is_abandoned_after_its_timeout(
    make_queue: QueueFactory,
    raw_redis: Redis,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(handler_run, "CANCEL_GRACE", 0.5)
    queue = make_queue(max_retries=0)
    await queue.connect()
    await queue.enqueue("stubborn", "stubborn", {"seconds": 3}, timeout=0.5)
    await queue.enqueue_many(
        {"task_id": f"ok-{i}", "task_type": "noop", "payload": {}} for i in range(5)
    )
    worker = Worker(queue, registry, concurrency=2, burst=True)
    started = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="agentic.worker"):
        stats = await asyncio.wait_for(worker.run(), 20)
    assert time.monotonic() - started < 2.5  # timeout + grace, not the 3 s it swallows
    assert stats.done == 5 and stats.failed == 1 and stats.abandoned == 1
    task = await queue.get_task("stubborn")
    assert task is not None and task.state == TaskState.DEAD_LETTER
    assert task.error == "timed out after 0.5 s"
    assert not await raw_redis.zscore(queue.keys.processing, "stubborn")  # lease not renewed
    assert any("ignored its cancellation" in r.getMessage() for r in caplog.records)
    assert worker.still_running == 1  # it holds its slot until it returns
    await asyncio.sleep(3)  # its own 3 s: then it returns and gives the slot back
    assert worker.still_running == 0
    await assert_every_task_in_one_state(raw_redis, queue)


async def test_a_burst_worker_process_settles_every_misbehaving_task_and_exits(
    make_queue: QueueFactory, raw_redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    queue = make_queue(max_retries=0)
    await queue.connect()
    await queue.enqueue_many(
        [{"task_id": f"bad-{t}", "task_type": t, "payload": {}} for t in BAD]
        + [{"task_id": "stubborn", "task_type": "stubborn", "payload": {}, "timeout": 1}]
        + [{"task_id": f"ok-{i}", "task_type": "noop", "payload": {}} for i in range(20)]
    )
    argv = agentic_argv(
        "worker", "--app", "tests.support.worker_apps:registry", "--burst", "--concurrency", "4"
    )
    env = agentic_env(redis_url, queue.queue_name, AGENTIC_MAX_RETRIES="0")
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stderr=out)
    try:
        assert await wait_exit(proc, 30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    err = log.read_text()
    assert "ignored its cancellation" in err and "still running" in err
    # A traceback only where a failed attempt is logged with its error (the handler's own
    # bug), never from the worker's machinery.
    records = re.split(r"\n(?=\d{4}-\d\d-\d\d \d\d:)", err)
    strays = [r for r in records if "Traceback" in r and " failed, now " not in r.split("\n")[0]]
    assert strays == []
    assert sum(" failed, now dead_letter" in r for r in records) >= len(BAD)
    sizes = await queue.get_queue_size()
    assert sizes["completed"] == 20 and sizes["dlq"] == len(BAD) + 1 and sizes["processing"] == 0
    await assert_every_task_in_one_state(raw_redis, queue)


async def test_a_worker_started_before_redis_waits_for_it_then_serves(tmp_path: Path) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    argv = agentic_argv("worker", "--app", "tests.support.worker_apps:registry")
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            argv, cwd=ROOT, env=agentic_env(url, "late"), stderr=out, start_new_session=True
        )
    server = RedisServer(port=port)
    try:
        await eventually(lambda: _async("Redis is unavailable, retrying" in log.read_text()))
        assert proc.poll() is None  # still waiting, not exited
        server.start()
        queue = RedisTaskQueue("late", redis_url=url)
        await queue.connect()
        await queue.enqueue("after", "noop", {"value": 7})
        assert await queue.wait_for_result("after", timeout=20) == {"echo": 7}
        await queue.close()
        proc.send_signal(signal.SIGTERM)
        assert await wait_exit(proc, 20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        server.cleanup()


def test_exit_on_unavailable_keeps_the_old_behaviour() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    argv = agentic_argv(
        "worker", "--app", "tests.support.worker_apps:registry", "--exit-on-unavailable"
    )
    done = subprocess.run(
        argv, cwd=ROOT, env=agentic_env(url, "gone"), capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 69 and "unreachable" in done.stderr and "Traceback" not in done.stderr


async def _async(value: bool) -> bool:
    return value


async def test_after_a_stop_with_redis_down_the_acknowledgement_retry_backs_off(
    private_redis: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The stop request no longer cuts the retry's backoff short: a few attempts in the
    grace period, not dozens a second."""
    queue = RedisTaskQueue(
        queue_name="spin", redis_url=private_redis.url, socket_timeout=0.5, connect_timeout=0.5
    )
    await queue.connect()
    await queue.enqueue("stranded", "sleep", {"seconds": 0.3})
    worker = Worker(queue, registry, shutdown_grace=2.0)
    serving = asyncio.create_task(worker.run())
    await eventually(lambda: _async(bool(worker._running)))
    private_redis.kill()
    with caplog.at_level(logging.WARNING, logger="agentic.worker"):
        worker.request_stop()
        await asyncio.wait_for(serving, 15)
    retries = [r for r in caplog.records if "acknowledging 1 tasks failed" in r.getMessage()]
    assert 1 <= len(retries) <= 8, len(retries)  # 0.1, 0.2, 0.4, 0.8 s ... within 2 s
    await queue.close()
