"""The scrape-time Redis gauges of utils/metrics.py: `RedisQueueCollector` reads each
queue's sizes, its oldest pending task, its live workers and its limits from Redis on every
scrape (so the gauges never drift), with its own short-timeout sync client, and never raises.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.cluster import RedisCluster as SyncRedisCluster
from redis.exceptions import RedisError

from utils.redis_queue import scripts
from utils.redis_queue.connection import check_url, parse_topology
from utils.redis_queue.errors import QueueError
from utils.redis_queue.keys import QueueKeys, QueueLayout
from utils.redis_queue.limits import STATE_FIELDS, Limit, LimitStatus, parse_limits, status_of
from utils.redis_queue.models import TaskPriority
from utils.redis_queue.registry import workers_from
from utils.redis_queue.snapshot import merge_snapshots
from utils.redis_queue.topology import sync_client

__all__ = ["STATES", "RedisQueueCollector"]

STATES = ("pending", "delayed", "processing", "completed", "failed", "cancelled", "dlq")

_Read = tuple[str, tuple[Any, ...]]  # a command name and its arguments


class RedisQueueCollector(Collector):
    """Gauges read from Redis on every scrape. Uses its own short-timeout sync client
    (collect() runs on the HTTP server's thread), and never raises: a failed scrape is
    counted in agentic_collector_errors_total and the queue gauges are left out."""

    def __init__(
        self,
        redis_url: str,
        queue_names: Iterable[str],
        *,
        key_prefix: str = "agentic",
        password: str | None = None,
        timeout: float = 2.0,
        cluster: bool = False,
        partitions: int = 1,
    ) -> None:
        # The queue's own kind of client: it follows MOVED/ASK and Sentinel failovers.
        self._redis = sync_client(
            parse_topology(check_url(redis_url), cluster=cluster),
            password=password,
            socket_timeout=timeout,
            connect_timeout=timeout,
        )
        self._queues = [QueueLayout(key_prefix, name, partitions) for name in queue_names]
        self._errors = 0
        self._lock = threading.Lock()

    def describe(self) -> list[Metric]:
        return []  # registering must not touch Redis

    def close(self) -> None:
        """Close its Redis connections (a scrape after this reconnects)."""
        self._redis.close()

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        families = _queue_families()
        try:
            for keys in self._queues:
                self._collect_queue(keys, families)
        except (RedisError, OSError, QueueError):
            with self._lock:
                self._errors += 1
        else:
            yield from families.values()
        errors = CounterMetricFamily(
            "agentic_collector_errors", "Scrapes whose Redis reads failed."
        )
        errors.add_metric([], self._errors)
        yield errors
        took = GaugeMetricFamily(
            "agentic_collector_scrape_duration_seconds", "Time the last Redis read took."
        )
        took.add_metric([], time.perf_counter() - started)
        yield took

    def _collect_queue(
        self, layout: QueueLayout, families: dict[str, GaugeMetricFamily | CounterMetricFamily]
    ) -> None:
        # the same script, parser and sum over partitions as get_queue_size()
        snapshot = merge_snapshots(
            [
                scripts.sizes_reply(scripts.run_sync(self._redis, scripts.sizes(keys)))
                for keys in layout.parts
            ]
        )
        q = layout.queue
        for state in STATES:
            families["depth"].add_metric([q, state], snapshot.sizes[state])
        for p in TaskPriority:
            count = snapshot.pending_by_priority[p.name.lower()]
            families["pending"].add_metric([q, p.name.lower()], count)
        families["dlq"].add_metric([q], snapshot.sizes["dlq"])
        families["enqueued"].add_metric([q], snapshot.counters.get("enqueued", 0))
        busy_types = [t for t, n in snapshot.pending_by_type.items() if n]
        oldest = max(self._oldest_pending_age(keys, busy_types) for keys in layout.parts)
        families["oldest"].add_metric([q], oldest)
        workers_live, in_flight = self._workers(layout.wide)
        families["workers"].add_metric([q], workers_live)
        families["in_flight"].add_metric([q], in_flight)
        # A pause is written to every partition: the first one's says what is paused.
        (paused,) = self._many([("hkeys", (layout.parts[0].paused,))])
        for target in sorted(paused):
            families["paused"].add_metric([q, target.decode()], 1)
        self._limits(layout.wide, families)  # queue-wide, whatever the partitions

    def _limits(
        self, keys: QueueKeys, families: dict[str, GaugeMetricFamily | CounterMetricFamily]
    ) -> None:
        """Each limit's capacity and use by kind, its pause and its held-back tasks."""
        (raw,) = self._many([("hgetall", (keys.limits,))])
        limits, paused = parse_limits({k.decode(): v.decode() for k, v in raw.items()})
        names = sorted(set(limits) | paused)
        if not names:
            return
        seconds, micros = self._server_time(keys.limits)
        now_ms = seconds * 1000 + micros // 1000
        reads: list[_Read] = []
        for name in names:
            reads.append(("hmget", (keys.limit_state(name), *STATE_FIELDS)))
            reads.append(("zcount", (keys.limit_held(name), now_ms, "+inf")))
        replies = self._many(reads)
        q = keys.queue
        for i, name in enumerate(names):
            limit = limits.get(name, Limit(name))
            status = status_of(limit, replies[2 * i], int(replies[2 * i + 1]), now_ms)
            for kind, capacity, used in _limit_use(status):
                families["limit_capacity"].add_metric([q, name, kind], capacity)
                families["limit_in_use"].add_metric([q, name, kind], used)
            families["limit_waiting"].add_metric([q, name], status.waiting)
            families["limit_paused"].add_metric([q, name], status.paused_for)

    def _oldest_pending_age(self, keys: QueueKeys, task_types: list[str]) -> float:
        """Age of the oldest pending task: the first task of each priority band of each
        type is the oldest there (FIFO), so only those few are read."""
        reads: list[_Read] = []
        for task_type in task_types:
            for p in TaskPriority:
                low, high = scripts.pending_band(p)
                reads.append(("zrangebyscore", (keys.pending(task_type), low, f"({high}", 0, 1)))
        heads = [ids[0].decode() for ids in self._many(reads) if ids]
        if not heads:
            return 0.0
        created = self._many([("hget", (keys.task(task_id), "created")) for task_id in heads])
        seconds, micros = self._server_time(keys.stats)
        now_ms = seconds * 1000 + micros / 1000
        oldest = min((int(c) for c in created if c), default=None)
        return 0.0 if oldest is None else max(0.0, (now_ms - oldest) / 1000)

    def _many(self, reads: list[_Read]) -> list[Any]:
        """Reads of one partition (one slot), in one pipeline."""
        pipe = self._redis.pipeline(transaction=False)
        for name, args in reads:
            getattr(pipe, name)(*args)
        return list(pipe.execute())

    def _server_time(self, near_key: str) -> tuple[int, int]:
        """TIME, not pipelined (a cluster pipeline refuses keyless commands); on a cluster
        sent to the node of `near_key`: redis-py's sync cluster client leaks the socket of
        its default node when a keyless command goes there."""
        if isinstance(self._redis, SyncRedisCluster):
            node = self._redis.get_node_from_key(near_key)  # type: ignore[no-untyped-call]
            reply = self._redis.time(target_nodes=node)
        else:
            reply = self._redis.time()
        seconds, micros = reply
        return int(seconds), int(micros)

    def _workers(self, keys: QueueKeys) -> tuple[int, int]:
        raw, beats = self._many(
            [("hgetall", (keys.workers,)), ("zrange", (keys.worker_beats, 0, -1, False, True))]
        )
        seconds, micros = self._server_time(keys.workers)
        live = [w for w in workers_from(raw, beats, seconds * 1000 + micros // 1000) if w.alive]
        return len(live), sum(w.in_flight for w in live)


def _limit_use(status: LimitStatus) -> list[tuple[str, float, float]]:
    """(kind, capacity, in use) of each kind a limit has."""
    limit, out = status.limit, []
    if limit.concurrency is not None:
        out.append(("concurrency", float(limit.concurrency), float(status.running)))
    if limit.rate is not None and status.rate_available is not None:
        burst = float(limit.effective_burst or 1)
        out.append(("rate", burst, burst - status.rate_available))
    if limit.tokens is not None and status.tokens_available is not None:
        out.append(("tokens", float(limit.tokens), limit.tokens - status.tokens_available))
    return out


def _queue_families() -> dict[str, GaugeMetricFamily | CounterMetricFamily]:
    limit_labels = ["queue", "limit", "kind"]
    return {
        "limit_capacity": GaugeMetricFamily(
            "agentic_limit_capacity",
            "A limit's capacity by kind: concurrency slots, rate burst, token budget.",
            labels=limit_labels,
        ),
        "limit_in_use": GaugeMetricFamily(
            "agentic_limit_in_use",
            "What a limit's capacity holds now: running tasks, spent rate, reserved tokens.",
            labels=limit_labels,
        ),
        "limit_waiting": GaugeMetricFamily(
            "agentic_limit_waiting_tasks",
            "Ready tasks a limit held back at the last claim that looked.",
            labels=["queue", "limit"],
        ),
        "limit_paused": GaugeMetricFamily(
            "agentic_limit_paused_seconds",
            "Seconds a limit still admits nothing (a provider's Retry-After).",
            labels=["queue", "limit"],
        ),
        "paused": GaugeMetricFamily(
            "agentic_queue_paused",
            'Claiming is paused (1): task_type "*" is the whole queue, else that type.',
            labels=["queue", "task_type"],
        ),
        "enqueued": CounterMetricFamily(
            "agentic_queue_enqueued",
            "Tasks enqueued into the queue by any producer (Redis's own lifetime counter).",
            labels=["queue"],
        ),
        "depth": GaugeMetricFamily(
            "agentic_queue_tasks", "Tasks in the queue by state.", labels=["queue", "state"]
        ),
        "pending": GaugeMetricFamily(
            "agentic_queue_pending_tasks",
            "Pending tasks by priority.",
            labels=["queue", "priority"],
        ),
        "dlq": GaugeMetricFamily(
            "agentic_queue_dlq_tasks", "Dead-lettered tasks.", labels=["queue"]
        ),
        "oldest": GaugeMetricFamily(
            "agentic_queue_oldest_pending_age_seconds",
            "How long the oldest pending task has waited (0 when none).",
            labels=["queue"],
        ),
        "workers": GaugeMetricFamily(
            "agentic_workers_live", "Workers that beat recently.", labels=["queue"]
        ),
        "in_flight": GaugeMetricFamily(
            "agentic_tasks_in_flight", "Tasks running on live workers.", labels=["queue"]
        ),
    }
