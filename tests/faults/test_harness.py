"""The checker itself: it must see loss, duplicates and broken structure when they exist."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.checker import reconcile
from tests.support.fault_servers import FaultRedis
from tests.support.ledger import Ledger, LedgerWriter
from tests.support.load import enqueue_all, payloads

pytestmark = pytest.mark.timeout(30)


async def test_checker_reports_lost_duplicated_and_structural_errors(
    fault_redis: FaultRedis, queue_factory: Callable[..., Any], ledger: Ledger
) -> None:
    q = await queue_factory(fault_redis)
    assert await enqueue_all(q, ledger.producer(), payloads(0, 6, "h")) == 6
    clean = await reconcile(q, ledger)
    assert clean.lost == {f"h-{i}": "pending" for i in range(6)}  # nothing ran yet
    assert not clean.structural and not clean.duplicated

    claimed = await q.claim("w", 6)
    for task in claimed[:3]:
        await q.complete_task(task.task_id, "ok")
    runs = LedgerWriter(ledger.root / "runs-1.log")
    for attempt, pid in ((1, 10), (2, 11)):  # h-0 ran twice, h-1 once
        runs.write("done", "h-0", attempt, pid, attempt, 0.0)
    runs.write("done", "h-1", 1, 10, 1, 0.0)
    k = q.keys
    await q.redis.delete(k.task("h-3"))  # acknowledged, now gone: lost and dangling
    await q.redis.zadd(k.completed, {"h-4": 0})  # in two structures
    await q.redis.hset(k.task("h-0"), "lease", "99")  # a lease on a completed task
    await q.redis.hincrby(k.stats, "completed", 5)  # a counter off
    report = await reconcile(q, ledger)
    assert set(report.lost) == {"h-3", "h-4", "h-5"}
    assert report.duplicated == {"h-0": 2} and report.unexplained == ["h-0"]
    text = "\n".join(report.structural)
    assert "h-3: in ['processing'] without a task record" in text
    assert "h-4: in 2 structures" in text
    assert "h-0: state 'completed' with lease 99" in text
    assert "counter completed=8 but expected 4" in text
    with pytest.raises(AssertionError):
        report.assert_standard_pass()


def test_ledger_lines_survive_the_writer(ledger: Ledger) -> None:
    writer = ledger.producer("x")
    writer.ack(["a", "b"])
    writer.close()
    assert set(ledger.acks()) == {"a", "b"}
    assert os.path.getsize(writer.path) > 0
