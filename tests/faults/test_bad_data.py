"""Bad data written by hand into a running queue's keys (reliability.md §3 B 24, and the
worker side of tests/test_bad_input.py): broken JSON, missing fields, wrong Redis types,
ids without records. Each is reported, dead-lettered or repaired; no worker crashes and
the queue never sticks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.checker import reconcile
from tests.support.fault_servers import FaultRedis
from tests.support.ledger import Ledger
from tests.support.load import Producer, drained, poll, value

Factory = Callable[..., Any]


@pytest.mark.timeout(60)
async def test_bad_records_and_keys_written_by_hand_are_quarantined_or_reported(
    fault_redis: FaultRedis,
    queue_factory: Factory,
    workers_factory: Factory,
    ledger: Ledger,
    fault_totals: Factory,
) -> None:
    q = await queue_factory(fault_redis)
    workers = workers_factory(fault_redis, lease=1.0)
    for _ in range(2):
        workers.start()
    producer = Producer(q, ledger.producer(), seed=12)
    producer.start(rate=100)
    await asyncio.sleep(1.0)
    k, r = q.keys, q.redis
    now_ms = int(time.time() * 1000)
    pending = k.pending("work")
    # records the engine cannot use, in the pending, delayed and processing structures
    await r.hset(
        k.task("bad-json"),
        mapping={
            "state": "pending",
            "type": "work",
            "prio": 1,
            "created": now_ms,
            "payload": '{"oops',
        },
    )
    await r.hset(k.task("no-type"), mapping={"state": "pending", "payload": "{}"})
    await r.set(k.task("not-hash"), "garbage")
    await r.hset(k.task("no-state"), mapping={"type": "work", "payload": "{}"})
    await r.zadd(pending, {"bad-json": 0, "no-type": 0, "not-hash": 0, "ghost": 0})
    await r.zadd(k.delayed, {"no-state": 0})
    await r.zadd(k.processing, {"ghost-lease": 0})
    # a state structure of the wrong type: every claim is refused (nothing written) and
    # reported, until an operator repairs it; then the backlog drains
    await r.delete(k.delayed)
    await r.set(k.delayed, "not a zset")
    assert await poll(lambda: value("holds a string" in workers.logs()), timeout=10)
    await asyncio.sleep(1.0)  # refused claims while producers keep going
    assert len(workers.alive()) == 2, workers.logs()
    await r.delete(k.delayed)  # the repair
    await r.zadd(k.delayed, {"no-state": 0})
    await asyncio.sleep(1.0)
    await producer.stop()
    assert await drained(q, producer.acked, timeout=30), await q.get_queue_size()
    assert len(workers.alive()) == 2 and "Traceback" not in workers.logs(), workers.logs()
    assert await workers.stop_all() == [0, 0]

    dead = {m.decode(): await _error(r, k.task(m.decode())) for m in await r.smembers(k.dlq)}
    assert set(dead) == {"bad-json", "no-type", "not-hash", "no-state"}
    assert "JSON" in dead["bad-json"] or "json" in dead["bad-json"]
    assert "corrupt task record" in dead["no-type"] and "corrupt" in dead["not-hash"]
    assert "delayed set" in dead["no-state"]
    stats = await q.get_statistics()
    assert stats["total_corrupt"] == 4
    assert int(await r.hget(k.stats, "orphans_dropped") or 0) == 2  # ghost, ghost-lease
    report = await reconcile(q, ledger, records_not_enqueued=4)
    report.assert_standard_pass(workers.logs())
    assert report.final["completed"] == producer.acked
    fault_totals(report, 7)


async def _error(r: Any, key: str) -> str:
    """A record's error text (stored in 64-byte chunks), read raw: these records may not
    decode as tasks."""
    count = int(await r.hget(key, "error.count") or 1)
    names = ["error", *(f"error.{i}" for i in range(1, count))]
    return "".join(v.decode() for v in await r.hmget(key, names) if v is not None)
