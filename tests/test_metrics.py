"""Prometheus metrics asserted by value: counters from the engine's choke points, and the
scrape-time collector against what Redis holds, over real HTTP."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from tests.support.redis_server import free_port
from tests.support.worker_apps import registry as handlers
from utils.metrics import QueueMetrics, RedisQueueCollector, serve_metrics
from utils.redis_queue import RedisTaskQueue, TaskPriority
from utils.redis_queue.worker import Worker

QueueFactory = Callable[..., RedisTaskQueue]


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_counters_and_histograms_follow_a_known_mix_of_outcomes(
    make_queue: QueueFactory, queue_name: str
) -> None:
    metrics = QueueMetrics()
    queue = make_queue(metrics=metrics, max_retries=1)
    await queue.connect()
    await queue.enqueue("ok1", "noop", {})
    await queue.enqueue("ok1", "noop", {})  # a duplicate is not counted
    await queue.enqueue_many(
        [
            {"task_id": "ok2", "task_type": "noop", "payload": {}},
            {"task_id": "flaky", "task_type": "flaky", "payload": {"failures": 1}},
            {"task_id": "perm", "task_type": "permanent", "payload": {}},
            {"task_id": "never", "task_type": "flaky", "payload": {"failures": 9}},
        ]
    )
    await Worker(queue, handlers, burst=True).run()
    r, q = metrics.registry, queue_name

    assert _value(r, "agentic_tasks_enqueued_total", queue=q, task_type="noop") == 2
    assert _value(r, "agentic_tasks_enqueued_total", queue=q, task_type="flaky") == 2
    finished = {
        outcome: sum(
            _value(r, "agentic_tasks_finished_total", queue=q, task_type=t, outcome=outcome)
            for t in ("noop", "flaky", "permanent")
        )
        for outcome in ("completed", "retried", "dead_lettered")
    }
    assert finished == {"completed": 3, "retried": 2, "dead_lettered": 2}
    stats = await queue.get_statistics()
    assert finished["completed"] == stats["total_completed"]
    assert finished["retried"] == stats["total_retried"]
    assert finished["dead_lettered"] == stats["total_dead_lettered"]
    attempts = sum(
        _value(r, "agentic_task_run_seconds_count", queue=q, task_type=t)
        for t in ("noop", "flaky", "permanent")
    )
    assert attempts == 7 == sum(finished.values())
    assert _value(r, "agentic_task_wait_seconds_count", queue=q, task_type="noop") == 2
    assert r.get_sample_value("agentic_build_info", {"version": "0.1.0"}) == 1


async def test_collector_gauges_equal_what_redis_holds(
    make_queue: QueueFactory, redis_url: str, queue_name: str
) -> None:
    queue = make_queue()
    await queue.connect()
    await queue.enqueue("low", "noop", {}, TaskPriority.LOW)
    await queue.enqueue("high1", "sleep", {"seconds": 0}, TaskPriority.HIGH)
    await queue.enqueue("high2", "noop", {}, TaskPriority.HIGH)
    await queue.enqueue("later", "noop", {}, delay=60)
    await queue.enqueue("dead", "noop", {}, TaskPriority.CRITICAL)
    await queue.dequeue("w", timeout=1)  # "dead": critical comes first
    await queue.fail_task("dead", "boom", retry=False)
    await queue.dequeue("w", timeout=1)  # "high1" stays processing
    registry = CollectorRegistry()
    registry.register(RedisQueueCollector(redis_url, [queue_name]))

    sizes = await queue.get_queue_size()
    for state, count in sizes.items():
        assert _value(registry, "agentic_queue_tasks", queue=queue_name, state=state) == count
    assert sizes["pending"] == 2 and sizes["processing"] == 1 and sizes["dlq"] == 1
    pending = {
        p.name.lower(): _value(
            registry, "agentic_queue_pending_tasks", queue=queue_name, priority=p.name.lower()
        )
        for p in TaskPriority
    }
    assert pending == {"low": 1, "normal": 0, "high": 1, "critical": 0}
    assert _value(registry, "agentic_queue_dlq_tasks", queue=queue_name) == 1
    age = _value(registry, "agentic_queue_oldest_pending_age_seconds", queue=queue_name)
    assert 0 <= age < 5
    assert _value(registry, "agentic_collector_errors_total") == 0


async def test_every_state_gauge_equals_get_queue_size_with_distinct_counts(
    make_queue: QueueFactory, redis_url: str, queue_name: str, raw_redis: Redis
) -> None:
    """A different number of tasks in every state, so a gauge reading another state's
    count (delayed and processing were once swapped) cannot pass."""
    queue = make_queue(enable_dlq=False, max_retries=0)
    await queue.connect()
    counts = {"processing": 2, "completed": 3, "failed": 4, "cancelled": 5}
    await queue.enqueue_many(
        {"task_id": f"{state}{i}", "task_type": "noop", "payload": {}}
        for state, n in counts.items()
        for i in range(n)
    )
    claimed = await queue.claim("w", sum(counts.values()))
    by_state: dict[str, list[str]] = {state: [] for state in counts}
    for task in claimed:
        by_state[task.task_id.rstrip("0123456789")].append(task.task_id)
    for task_id in by_state["completed"]:
        await queue.complete_task(task_id)
    for task_id in by_state["failed"]:
        await queue.fail_task(task_id, "no")
    for task_id in by_state["cancelled"]:
        await queue.cancel(task_id)  # running: flagged, then failed -> cancelled
        await queue.fail_task(task_id, "stopped")
    await queue.enqueue_many(
        {"task_id": f"delayed{i}", "task_type": "noop", "payload": {}, "delay": 60}
        for i in range(6)
    )
    await queue.enqueue_many(
        {"task_id": f"pending{i}", "task_type": "noop", "payload": {}} for i in range(7)
    )
    registry = CollectorRegistry()
    registry.register(RedisQueueCollector(redis_url, [queue_name]))
    sizes = await queue.get_queue_size()
    assert sizes == {
        "pending": 7,
        "delayed": 6,
        "processing": 2,
        "completed": 3,
        "failed": 4,
        "cancelled": 5,
        "dlq": 0,
    }
    for state, count in sizes.items():
        assert _value(registry, "agentic_queue_tasks", queue=queue_name, state=state) == count

    dlq_queue = make_queue(queue_name=f"{queue_name}-dlq", max_retries=0)
    await dlq_queue.connect()
    await dlq_queue.enqueue_many(
        {"task_id": f"d{i}", "task_type": "noop", "payload": {}} for i in range(8)
    )
    for task in await dlq_queue.claim("w", 8):
        await dlq_queue.fail_task(task.task_id, "no")
    registry = CollectorRegistry()
    registry.register(RedisQueueCollector(redis_url, [dlq_queue.queue_name]))
    name = dlq_queue.queue_name
    assert (await dlq_queue.get_queue_size())["dlq"] == 8
    assert _value(registry, "agentic_queue_tasks", queue=name, state="dlq") == 8
    assert _value(registry, "agentic_queue_dlq_tasks", queue=name) == 8
    async for key in raw_redis.scan_iter(match=f"agentic:{{{name}}}:*"):
        await raw_redis.delete(key)


async def test_workers_and_tasks_in_flight_come_from_the_registry(
    make_queue: QueueFactory, redis_url: str, queue_name: str
) -> None:
    queue = make_queue()
    await queue.connect()
    await queue.enqueue("busy", "sleep", {"seconds": 30})
    worker = Worker(queue, handlers, beat_interval=0.1)
    serving = asyncio.create_task(worker.run())
    registry = CollectorRegistry()
    registry.register(RedisQueueCollector(redis_url, [queue_name]))
    deadline = time.monotonic() + 5
    while _value(registry, "agentic_tasks_in_flight", queue=queue_name) != 1:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)  # the worker's next registry beat
    assert _value(registry, "agentic_workers_live", queue=queue_name) == 1
    worker.shutdown_grace = 0
    worker.request_stop()
    await serving


def test_metrics_endpoint_serves_the_registry_over_http(redis_url: str, queue_name: str) -> None:
    metrics = QueueMetrics()
    metrics.task_enqueued(queue_name, "noop", 3)
    metrics.registry.register(RedisQueueCollector(redis_url, [queue_name]))
    server, thread = serve_metrics(0, metrics.registry, addr="127.0.0.1")
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    key = (
        "agentic_tasks_enqueued_total",
        (("queue", queue_name), ("task_type", "noop")),
    )
    assert samples[key] == 3
    assert samples[("agentic_queue_tasks", (("queue", queue_name), ("state", "pending")))] == 0


def test_collector_keeps_answering_when_redis_is_down(queue_name: str) -> None:
    registry = CollectorRegistry()
    url = f"redis://127.0.0.1:{free_port()}/0"
    registry.register(RedisQueueCollector(url, [queue_name], timeout=0.5))
    started = time.monotonic()
    for scrape in (1, 2):  # no exception escapes, and every failed scrape is counted
        names = {s.name: s.value for family in registry.collect() for s in family.samples}
        assert names["agentic_collector_errors_total"] == scrape
        assert "agentic_queue_tasks" not in names
    assert time.monotonic() - started < 3


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _scrape(port: int) -> Samples:
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def _scrape_when(port: int, ready: Callable[[Samples], bool]) -> Samples:
    deadline = time.monotonic() + 15
    while True:  # the process is starting or still working: nothing in Redis says when
        try:
            samples = _scrape(port)
            if ready(samples):
                return samples
        except OSError:
            pass
        assert time.monotonic() < deadline, "no scrape matched in time"
        await asyncio.sleep(0.05)


async def test_worker_process_serves_its_counters_and_the_redis_gauges(
    queue: RedisTaskQueue, redis_url: str, queue_name: str
) -> None:
    from tests.support.processes import worker_processes

    await queue.enqueue_many(
        {"task_id": f"m{i}", "task_type": "noop", "payload": {}} for i in range(5)
    )
    port = free_port()
    key = (
        "agentic_tasks_finished_total",
        (("outcome", "completed"), ("queue", queue_name), ("task_type", "noop")),
    )
    with worker_processes(redis_url, queue_name) as procs:
        procs.start("--metrics-port", str(port))
        samples = await _scrape_when(port, lambda s: s.get(key) == 5)
    completed = ("agentic_queue_tasks", (("queue", queue_name), ("state", "completed")))
    assert samples[completed] == 5


async def test_standalone_exporter_serves_the_redis_gauges(
    queue: RedisTaskQueue, redis_url: str, queue_name: str
) -> None:
    import subprocess

    from tests.support.processes import ROOT, agentic_argv, agentic_env

    await queue.enqueue("waiting", "noop", {}, TaskPriority.HIGH)
    port = free_port()
    proc = subprocess.Popen(
        agentic_argv("metrics", "--port", str(port), "--addr", "127.0.0.1"),
        cwd=ROOT,
        env=agentic_env(redis_url, queue_name),
    )
    try:
        key = ("agentic_queue_pending_tasks", (("priority", "high"), ("queue", queue_name)))
        samples = await _scrape_when(port, lambda s: key in s)
        assert samples[key] == 1
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


async def test_supervisor_serves_the_sum_of_its_worker_processes(
    queue: RedisTaskQueue, redis_url: str, queue_name: str
) -> None:
    from tests.support.processes import worker_processes

    await queue.enqueue_many(
        {"task_id": f"s{i}", "task_type": "noop", "payload": {}} for i in range(40)
    )
    port = free_port()
    key = (
        "agentic_tasks_finished_total",
        (("outcome", "completed"), ("queue", queue_name), ("task_type", "noop")),
    )
    with worker_processes(redis_url, queue_name) as procs:
        procs.start("--processes", "2", "--concurrency", "2", "--metrics-port", str(port))
        samples = await _scrape_when(port, lambda s: s.get(key) == 40)
    assert samples[("agentic_build_info", (("version", "0.1.0"),))] == 1
    completed = ("agentic_queue_tasks", (("queue", queue_name), ("state", "completed")))
    assert samples[completed] == 40


async def test_utilisation_and_cancelled_outcome_are_counted(
    make_queue: QueueFactory, queue_name: str
) -> None:
    metrics = QueueMetrics()
    queue = make_queue(metrics=metrics)
    await queue.connect()
    await queue.enqueue("busy", "sleep", {"seconds": 0.4})
    await queue.enqueue("doomed", "sleep", {"seconds": 30})
    worker = Worker(queue, handlers, concurrency=2, beat_interval=0.1)
    serving = asyncio.create_task(worker.run())
    r = metrics.registry
    deadline = time.monotonic() + 5
    while (await queue.get_queue_size())["processing"] < 2:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)  # both handlers started
    await queue.cancel("doomed")
    assert await queue.wait_for_result("busy", 5) == "slept"
    await asyncio.sleep(0.3)  # a few registry beats report the worker's time
    worker.request_stop()
    await serving
    cancelled = _value(
        r, "agentic_tasks_finished_total", queue=queue_name, task_type="sleep", outcome="cancelled"
    )
    assert cancelled == 1
    busy = _value(r, "agentic_worker_busy_seconds_total", queue=queue_name)
    slots = _value(r, "agentic_worker_slot_seconds_total", queue=queue_name)
    assert 0.3 < busy < slots  # about 0.4 s busy out of 2 slots x ~0.7 s


async def test_limit_gauges_and_the_held_back_counter_follow_redis(
    make_queue: QueueFactory, redis_url: str, queue_name: str
) -> None:
    metrics = QueueMetrics()
    queue = make_queue(metrics=metrics)
    await queue.connect()
    await queue.set_limit("noop", concurrency=2)
    await queue.set_limit("openai", tokens=1000, per=3600)
    await queue.enqueue_many(
        {"task_id": f"t{i}", "task_type": "noop", "payload": {}, "limits": ["openai"],
         "cost_tokens": 100}
        for i in range(5)
    )  # fmt: skip
    first = await queue.claim_ready("w", 10)
    assert len(first.tasks) == 2
    await queue.back_off_task(first.tasks[0].task_id, first.tasks[0].lease_token, 60, ["x"])
    registry = CollectorRegistry()
    collector = RedisQueueCollector(redis_url, [queue_name])
    registry.register(collector)
    try:
        q = queue_name

        def gauge(name: str, **labels: str) -> float:
            return _value(registry, name, queue=q, **labels)

        assert gauge("agentic_limit_capacity", limit="noop", kind="concurrency") == 2
        assert gauge("agentic_limit_in_use", limit="noop", kind="concurrency") == 1
        assert gauge("agentic_limit_capacity", limit="openai", kind="tokens") == 1000
        assert gauge("agentic_limit_in_use", limit="openai", kind="tokens") == pytest.approx(
            100, abs=1
        )  # two reserved, one given back by the back-off
        assert gauge("agentic_limit_waiting_tasks", limit="noop") == 3
        assert 59 < gauge("agentic_limit_paused_seconds", limit="x") <= 60
    finally:
        collector.close()
    deferred = _value(metrics.registry, "agentic_limit_deferred_total", queue=q, limit="noop")
    assert deferred == 3
