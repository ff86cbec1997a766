"""Failovers under load, on real servers: a Redis Cluster (CLUSTER FAILOVER on a replica,
kill -9 of a primary, a slot migration while workers run) and a Sentinel group (SENTINEL
FAILOVER, kill -9 of the primary). A producer enqueues one task at a time while two
workers run them; afterwards every acknowledged task must be completed (nothing lost,
nothing stuck), and a task runs twice only when its lease was lost. Each test prints its
figures; README's Topologies section quotes them."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from redis.crc import key_slot

from tests.support.ha_load import LoadResult, run_under_fault
from tests.support.topologies import ClusterGroup, SentinelGroup
from utils.redis_queue import RedisTaskQueue, RetryPolicy

pytestmark = pytest.mark.timeout(240)
FAST_RETRY = RetryPolicy(first_immediate=True, base_seconds=0.05, factor=2.0, cap_seconds=0.2)
PARTS = 6


def _factory(url: str, **fixed: Any) -> Callable[..., RedisTaskQueue]:
    name = f"ha-{uuid.uuid4().hex[:8]}"

    def make(**kwargs: Any) -> RedisTaskQueue:
        options = {"lease_seconds": 2.0, "retry_policy": FAST_RETRY, **fixed, **kwargs}
        return RedisTaskQueue(name, url, **options)

    return make


def _report(case: str, result: LoadResult) -> None:
    print(f"\n{case}: {result.summary()}")  # the figures the README quotes


def _assert_nothing_lost_or_stuck(result: LoadResult) -> None:
    assert len(result.acked) > 100, result.summary()
    assert not result.lost, (result.summary(), result.lost[:5])
    assert not result.stuck, (result.summary(), [(t, result.final[t]) for t in result.stuck[:5]])
    # a task runs twice only when it lost a lease (its worker's Redis went away meanwhile)
    assert all(n > 0 for n in result.lease_losses.values()), result.lease_losses


@pytest.mark.parametrize("fault", ["failover", "kill", "reshard"])
async def test_a_partitioned_queue_on_a_cluster_survives_a_fault_under_load(fault: str) -> None:
    with ClusterGroup() as cluster:
        make = _factory(cluster.url, cluster=True, partitions=PARTS)
        layout_probe = make()
        stats_key = layout_probe.layout.parts[0].stats
        victim = cluster.node_for_key(stats_key)
        others = [p for p in cluster.primaries() if p != victim]

        def strike() -> None:
            if fault == "failover":
                cluster.failover(cluster.replicas_of(victim)[0])
            elif fault == "kill":
                cluster.kill_primary(victim)
            else:  # the victim's first slots, up to partition 0's, move away (reshard
                # takes a source's slots from its lowest; partition 0's sits in 1365-4095)
                cluster.reshard(victim, others[0], key_slot(stats_key.encode()) + 1)

        # kill -9 can drop writes the replica had not received: durable enqueue is what
        # makes an acknowledged task survive that; the other two faults lose nothing anyway.
        result = await run_under_fault(make, strike, durable=fault == "kill")
        _report(f"cluster {fault}", result)
        _assert_nothing_lost_or_stuck(result)
        if fault == "reshard":
            assert cluster.node_for_key(layout_probe.layout.parts[0].stats) == others[0]


async def test_a_cluster_url_listing_its_nodes_starts_while_the_first_is_down() -> None:
    with ClusterGroup() as cluster:
        first = cluster.ports[0]
        seeds = ",".join(f"127.0.0.1:{p}" for p in cluster.ports)
        if cluster.is_primary(first):
            cluster.kill_primary(first)
        else:
            cluster.kill(first)
        q = RedisTaskQueue(f"ha-{uuid.uuid4().hex[:8]}", f"redis://{seeds}/0", cluster=True,
                           partitions=PARTS)  # fmt: skip
        await q.connect()
        try:
            await q.enqueue_many([{"task_id": f"s{i}", "task_type": "t", "payload": {}}
                                  for i in range(60)])  # fmt: skip
            assert len(await q.claim("w", 60)) == 60
        finally:
            await q.close()


@pytest.mark.parametrize("fault", ["failover", "kill"])
async def test_a_durable_enqueue_survives_a_sentinel_failover_under_load(fault: str) -> None:
    with SentinelGroup() as group:
        make = _factory(group.url, min_replicas=1, durable_timeout_ms=2000)
        strike = group.failover if fault == "failover" else group.kill_primary
        result = await run_under_fault(make, strike, durable=True)
        _report(f"sentinel {fault}, durable enqueue", result)
        _assert_nothing_lost_or_stuck(result)


async def test_without_durable_enqueue_a_killed_primary_may_lose_what_it_acknowledged() -> None:
    """Measured, not asserted to be zero: what plain enqueue loses when the primary is
    killed under load (replication is asynchronous)."""
    with SentinelGroup() as group:
        result = await run_under_fault(_factory(group.url), group.kill_primary, durable=False)
        _report("sentinel kill, plain enqueue", result)
        assert len(result.acked) > 100
        assert not result.stuck  # whatever survived finishes
