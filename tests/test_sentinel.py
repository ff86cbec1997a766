"""A queue behind Redis Sentinel (a primary, two replicas, three sentinels): the sentinel://
URL, durable enqueue (WAIT on replicas), and the configuration mistakes a user makes.
Failovers under load: tests/faults/test_ha.py."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from redis.asyncio import Redis

from tests.support.processes import ROOT, agentic_argv, agentic_env
from tests.support.redis_server import RedisServer
from tests.support.topologies import SentinelGroup
from utils.redis_queue import (
    DurabilityError,
    InvalidRedisUrl,
    RedisTaskQueue,
    RedisUnavailable,
    TaskState,
    TopologyError,
)
from utils.redis_queue.models import Settlement

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def group() -> Iterator[SentinelGroup]:
    with SentinelGroup() as g:
        yield g


@pytest.fixture
async def sq(group: SentinelGroup) -> AsyncIterator[Callable[..., RedisTaskQueue]]:
    name = f"s-{uuid.uuid4().hex[:10]}"
    made: list[RedisTaskQueue] = []

    def factory(**kwargs: Any) -> RedisTaskQueue:
        q = RedisTaskQueue(kwargs.pop("queue_name", name), kwargs.pop("url", group.url), **kwargs)
        made.append(q)
        return q

    yield factory
    for q in made:
        await q.close()


async def test_a_sentinel_url_reaches_the_primary(
    group: SentinelGroup, sq: Callable[..., RedisTaskQueue]
) -> None:
    q = sq()
    await q.connect()
    await q.enqueue("a", "t", {"x": 1})
    (task,) = await q.claim("w", 1)
    await q.complete_task(task.task_id, "done")
    assert await q.wait_for_result("a", timeout=5) == "done"
    info = await q.redis.info("server")
    assert int(info["tcp_port"]) == group.primary_port()


async def test_a_durable_enqueue_returns_once_both_replicas_have_the_task(
    group: SentinelGroup, sq: Callable[..., RedisTaskQueue]
) -> None:
    q = sq(durable=True, min_replicas=2)
    await q.connect()
    task = await q.enqueue("d1", "t", {})
    assert task.state == TaskState.PENDING
    many = await q.enqueue_many(
        [{"task_id": f"m{i}", "task_type": "t", "payload": {}} for i in range(2500)]
    )
    assert len(many) == 2500
    keys = [q.keys_for(t.task_id).task(t.task_id) for t in many]
    for port in group.replica_ports():  # each replica has every task when the call returns
        replica = Redis(host="127.0.0.1", port=port)
        try:
            assert await replica.exists(*keys) == len(keys)
        finally:
            await replica.aclose()
    await q.claim("w", 1)
    assert await q.complete_task("d1", None) is None


async def test_durable_settle_confirms_each_acknowledgement_on_the_replicas(
    group: SentinelGroup, sq: Callable[..., RedisTaskQueue]
) -> None:
    q = sq(durable_settle=True, min_replicas=2)
    await q.connect()
    await q.enqueue_many([{"task_id": f"a{i}", "task_type": "t", "payload": {}} for i in range(50)])
    claimed = await q.claim("w", 50)
    states = await q.settle_many([Settlement(t.task_id, t.lease_token, result=1) for t in claimed])
    assert states == [TaskState.COMPLETED] * 50
    for port in group.replica_ports():  # every replica has every completion on return
        replica = Redis(host="127.0.0.1", port=port)
        try:
            assert await replica.zcard(q.keys.completed) == 50
        finally:
            await replica.aclose()
    strict = sq(
        queue_name=q.queue_name, durable_settle=True, min_replicas=3, durable_timeout_ms=100
    )
    await strict.connect()
    await strict.enqueue("b", "t", {})
    (task,) = await strict.claim("w", 1)
    with pytest.raises(DurabilityError):
        await strict.settle_many([Settlement("b", task.lease_token, result=1)])
    assert (await strict.get_task("b")).state == TaskState.COMPLETED  # type: ignore[union-attr]


async def test_more_replicas_than_exist_is_a_durability_error_that_says_the_task_exists(
    sq: Callable[..., RedisTaskQueue],
) -> None:
    q = sq(min_replicas=3, durable_timeout_ms=200)
    await q.connect()
    with pytest.raises(DurabilityError) as refused:
        await q.enqueue("d2", "t", {}, durable=True)
    assert refused.value.acked == 2 and refused.value.wanted == 3
    assert "may be lost" in str(refused.value)
    task = await q.get_task("d2")
    assert task is not None and task.state == TaskState.PENDING  # written on the primary
    again = await q.enqueue("d2", "t", {})  # plain: idempotent, no second task
    assert again.task_id == "d2" and (await q.get_queue_size())["pending"] == 1


async def test_a_wrong_master_name_is_a_topology_error(group: SentinelGroup) -> None:
    url = group.url.replace(group.master_name, "no-such-master")
    with pytest.raises(TopologyError, match="no-such-master"):
        await RedisTaskQueue("x", url).connect()


async def test_unreachable_sentinels_are_an_outage_not_a_mistake() -> None:
    q = RedisTaskQueue("x", "sentinel://127.0.0.1:1,127.0.0.1:2/agentic-ha", connect_timeout=0.5)
    with pytest.raises(RedisUnavailable):
        await q.connect()


async def test_a_plain_url_at_a_replica_is_refused_at_connect(group: SentinelGroup) -> None:
    replica = group.replica_ports()[0]
    with pytest.raises(TopologyError, match="read-only replica"):
        await RedisTaskQueue("x", f"redis://127.0.0.1:{replica}/0").connect()


@pytest.mark.parametrize(
    "url",
    [
        "sentinel://",
        "sentinel://127.0.0.1:26379",
        "sentinel://127.0.0.1:99999/m",
        "sentinel://127.0.0.1:x/m",
        "sentinel://a:1/m/db",
        "sentinel://a:1/m/0/extra",
    ],
)
def test_a_malformed_sentinel_url_says_what_is_wrong(url: str) -> None:
    with pytest.raises(InvalidRedisUrl, match="Sentinel URL"):
        RedisTaskQueue("x", url)


def test_several_hosts_without_cluster_mode_or_sentinel_are_refused() -> None:
    with pytest.raises(InvalidRedisUrl, match="several hosts"):
        RedisTaskQueue("x", "redis://a:1,b:2/0")
    with pytest.raises(InvalidRedisUrl, match="host"):
        RedisTaskQueue("x", "redis://a:1,b:x/0", cluster=True)
    assert RedisTaskQueue("x", "redis://a:1,b:2/0", cluster=True).topology.seeds == (
        ("a", 1),
        ("b", 2),
    )


def test_a_sentinel_url_with_cluster_mode_is_refused() -> None:
    with pytest.raises(InvalidRedisUrl, match="not a cluster"):
        RedisTaskQueue("x", "sentinel://a:1/m", cluster=True)


def test_the_cli_maps_sentinel_mistakes_to_exit_codes(group: SentinelGroup) -> None:
    wrong = group.url.replace(group.master_name, "nope")
    cases = [(wrong, 2), ("sentinel://127.0.0.1:1/agentic-ha", 69), ("sentinel://h:1", 2)]
    for url, code in cases:
        out = subprocess.run(
            agentic_argv("info"), env=agentic_env(url, "x", AGENTIC_CONNECT_TIMEOUT="0.5"),
            cwd=ROOT, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert out.returncode == code, (url, out.stderr)
        assert "Traceback" not in out.stderr and out.stderr.startswith("error:")


async def test_a_primary_demoted_under_a_plain_url_gives_a_typed_error_not_a_generic_one(
    private_redis: RedisServer,
) -> None:
    other = RedisServer()
    other.start()
    q = RedisTaskQueue("demoted", private_redis.url)
    try:
        await q.connect()
        await q.enqueue("before", "t", {})
        admin = Redis.from_url(private_redis.url)
        await admin.replicaof("127.0.0.1", str(other.port))  # what a failover does to it
        await admin.aclose()
        with pytest.raises(TopologyError, match="read-only replica now"):
            await q.enqueue("after", "t", {})
    finally:
        await q.close()
        other.cleanup()
