"""One queue over a real Redis Cluster (3 primaries, 3 replicas): partitions on every
primary, the whole API, worker processes draining it, the CLI, metrics, a pipeline run,
and the configuration mistakes a user makes. Faults under load: tests/faults/test_ha.py."""

from __future__ import annotations

import asyncio
import gc
import json
import subprocess
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from redis.asyncio.cluster import RedisCluster

from agents import build_registry
from pipeline import DistributedPipelineManager, RunStatus
from tests.support.pipeline import settings, spec
from tests.support.processes import ROOT, SpawnedWorkers, agentic_argv, agentic_env
from tests.support.topologies import ClusterGroup
from utils.metrics import RedisQueueCollector
from utils.redis_queue import RedisTaskQueue, TaskState, TopologyError

pytestmark = pytest.mark.timeout(120)
PARTS = 6


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterGroup]:
    with ClusterGroup() as group:
        yield group


@pytest.fixture
def name() -> str:
    return f"c-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def cq(cluster: ClusterGroup, name: str) -> AsyncIterator[Callable[..., RedisTaskQueue]]:
    made: list[RedisTaskQueue] = []

    def factory(**kwargs: Any) -> RedisTaskQueue:
        options: dict[str, Any] = {"cluster": True, "partitions": PARTS, **kwargs}
        q = RedisTaskQueue(name, cluster.url, **options)
        made.append(q)
        return q

    yield factory
    for q in made:
        await q.close()


def _tasks(ids: list[str], task_type: str = "noop") -> list[dict[str, Any]]:
    return [{"task_id": i, "task_type": task_type, "payload": {}} for i in ids]


async def test_six_partitions_land_two_on_each_primary(
    cluster: ClusterGroup, cq: Callable[..., RedisTaskQueue]
) -> None:
    q = cq()
    await q.connect()
    await q.enqueue_many(_tasks([f"t{i}" for i in range(600)]))
    owners = [cluster.node_for_key(keys.stats) for keys in q.layout.parts]
    assert sorted(owners.count(p) for p in set(owners)) == [2, 2, 2]
    assert set(owners) == set(cluster.primaries())
    assert (await q.get_queue_size())["pending"] == 600


async def test_the_queue_api_works_across_slots_and_nodes(
    cq: Callable[..., RedisTaskQueue],
) -> None:
    q = cq()
    await q.connect()
    first = await q.enqueue("same", "noop", {"n": 1})
    assert (await q.enqueue("same", "noop", {"n": 2})).payload == first.payload
    await q.enqueue_many(_tasks([f"a{i}" for i in range(50)]))
    claimed = await q.claim("w", 51)
    assert len(claimed) == 51
    done, dead, running = claimed[0].task_id, claimed[1].task_id, claimed[2].task_id
    await q.complete_task(done, {"ok": True})
    assert await q.wait_for_result(done, timeout=5) == {"ok": True}
    await q.fail_task(dead, "boom", retry=False)
    assert await q.cancel(running) == TaskState.PROCESSING
    assert (await q.retry_dlq_task(dead)).state == TaskState.PENDING
    stats = await q.get_statistics()
    assert stats["total_enqueued"] == 51 and stats["completed"] == 1
    assert stats["processing"] == 49 and stats["pending"] == 1
    assert [t.task_id for t in await q.list_tasks(TaskState.PENDING)] == [dead]
    task = await q.get_task(done)
    assert task is not None and task.state == TaskState.COMPLETED


async def test_claim_check_blobs_live_in_their_tasks_slot_across_the_cluster(
    cluster: ClusterGroup, cq: Callable[..., RedisTaskQueue]
) -> None:
    q = cq(blob_threshold_bytes=1000)
    await q.connect()
    ids = [f"b{i}" for i in range(30)]
    await q.enqueue_many(
        {"task_id": i, "task_type": "noop", "payload": {"data": i * 1000}} for i in ids
    )
    claimed = await q.claim("w", 30)
    assert sorted(t.task_id for t in claimed) == sorted(ids)
    assert all(t.payload == {"data": t.task_id * 1000} for t in claimed)
    for t in claimed:
        await q.complete_task(t.task_id, {"echo": t.payload["data"]})
    for i in ids:
        keys = q.keys_for(i)
        node = cluster.node_for_key(keys.task(i))
        assert cluster.node_for_key(keys.blob(i, "payload")) == node
        assert cluster.node_for_key(keys.blob(i, "result")) == node
        task = await q.get_task(i)
        assert task is not None and task.result == {"echo": i * 1000}
        assert set(task.blobs) == {"payload", "result"}
    assert await q.clear_completed(older_than_seconds=0) == 30
    client = RedisCluster.from_url(cluster.url)
    try:
        for i in ids:
            keys = q.keys_for(i)
            assert not await client.exists(keys.blob(i, "payload"), keys.blob(i, "result"))
    finally:
        await client.aclose()


async def test_paged_listing_search_and_the_registry_work_across_the_cluster(
    cq: Callable[..., RedisTaskQueue], name: str
) -> None:
    q = cq()
    await q.connect()
    await q.enqueue_many(_tasks([f"l{i:03d}" for i in range(300)]))
    claimed: list[Any] = []
    while len(claimed) < 300:  # a claim serves one partition at a time
        claimed += await q.claim("w", 300 - len(claimed))
    for task in claimed[:40]:
        await q.fail_task(task.task_id, f"lost {task.task_id}", retry=False)
    listed, cursor, pages = [], None, 0
    while True:
        page = await q.page_tasks(TaskState.PROCESSING, limit=7, cursor=cursor)
        listed += [t.task_id for t in page.tasks]
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert sorted(listed) == sorted(t.task_id for t in claimed[40:]) and pages == 38
    dead = await q.page_tasks(TaskState.DEAD_LETTER, limit=1000)
    assert dead.total == 40 and {t.task_id for t in dead.tasks} == {t.task_id for t in claimed[:40]}
    found = await q.search_tasks(f"lost {claimed[5].task_id}")
    assert [t.task_id for t in found.tasks] == [claimed[5].task_id] and found.complete
    assert name in await q.queue_names()
    await q.redis.srem("agentic:queues", name)


async def test_three_worker_processes_drain_3000_tasks_none_lost_or_run_twice(
    cluster: ClusterGroup, cq: Callable[..., RedisTaskQueue], name: str, tmp_path: Path
) -> None:
    q = cq()
    await q.connect()
    ids = [f"d{i}" for i in range(3000)]
    await q.enqueue_many(_tasks(ids))
    env = agentic_env(cluster.url, name, AGENTIC_REDIS_CLUSTER="1", AGENTIC_PARTITIONS=str(PARTS))
    workers = SpawnedWorkers()
    try:
        for _ in range(3):
            workers.spawn(
                agentic_argv("worker", "--app", "tests.support.worker_apps:registry",
                             "--concurrency", "20", "--burst"),
                env,
            )  # fmt: skip
        codes = [p.wait(90) for p in workers.procs]
    finally:
        workers.cleanup()
    assert codes == [0, 0, 0]
    sizes = await q.get_queue_size()
    assert sizes["completed"] == 3000 and sizes["pending"] == sizes["processing"] == 0
    tasks = await q.list_tasks(TaskState.COMPLETED, limit=5000)
    assert sorted(t.task_id for t in tasks) == sorted(ids)
    assert {t.attempts for t in tasks} == {1}


async def test_long_tasks_keep_their_leases_on_every_node(
    cluster: ClusterGroup, cq: Callable[..., RedisTaskQueue], name: str
) -> None:
    q = cq(lease_seconds=1.0)
    await q.connect()
    ids = [f"long{i}" for i in range(12)]  # every partition, so every primary
    await q.enqueue_many(
        [{"task_id": i, "task_type": "sleep", "payload": {"seconds": 3}} for i in ids]
    )
    env = agentic_env(
        cluster.url, name, AGENTIC_REDIS_CLUSTER="1", AGENTIC_PARTITIONS=str(PARTS),
        AGENTIC_LEASE_SECONDS="1",
    )  # fmt: skip
    workers = SpawnedWorkers()
    try:
        proc = workers.spawn(
            agentic_argv("worker", "--app", "tests.support.worker_apps:registry",
                         "--concurrency", "12", "--burst"),
            env,
        )  # fmt: skip
        # Someone must claim meanwhile, or a lapsed lease would never be noticed.
        while proc.poll() is None:
            await q.reap()
            await asyncio.sleep(0.2)  # a reaper's pace, as other workers would claim
        assert proc.returncode == 0
    finally:
        workers.cleanup()
    for task_id in ids:
        task = await q.get_task(task_id)
        assert task is not None and task.state == TaskState.COMPLETED
        assert task.attempts == 1 and task.lease_losses == 0


async def test_a_worker_waiting_on_every_partition_wakes_for_each(
    cq: Callable[..., RedisTaskQueue],
) -> None:
    producer, consumer = cq(), cq()
    await producer.connect()
    await consumer.connect()
    for n in range(PARTS * 2):
        waiting = asyncio.create_task(consumer.wait_for_work(["noop"], 8.0))
        await asyncio.sleep(0.05)  # its BLPOPs reached the nodes
        await producer.enqueue(f"wake{n}", "noop", {})
        await asyncio.wait_for(waiting, 3.0)
        claimed = await consumer.claim("w", 5, timeout=2.0)
        assert [t.task_id for t in claimed] == [f"wake{n}"]


def test_the_cli_and_the_collector_read_the_whole_partitioned_queue(
    cluster: ClusterGroup, name: str
) -> None:
    env = agentic_env(cluster.url, name)
    argv = ["--cluster", "--partitions", str(PARTS)]
    for i in range(40):
        out = subprocess.run(
            agentic_argv(*argv, "enqueue", "noop", "--id", f"cli{i}"), env=env, cwd=ROOT,
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
    info = subprocess.run(
        agentic_argv(*argv, "info", "--json"), env=env, cwd=ROOT,
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert info.returncode == 0, info.stderr
    shown = json.loads(info.stdout)
    assert shown["statistics"]["pending"] == 40 and shown["partitions"] == PARTS
    registry = CollectorRegistry()
    collector = RedisQueueCollector(cluster.url, [name], cluster=True, partitions=PARTS)
    registry.register(collector)
    try:
        text = generate_latest(registry).decode()
    finally:
        collector.close()
        # redis-py 8.1's sync cluster client leaves one socket of its first command open
        # after close(); collected here, so the warning does not land in a later test
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            del collector, registry
            gc.collect()
    assert f'agentic_queue_tasks{{queue="{name}",state="pending"}} 40.0' in text
    assert "agentic_collector_errors_total 0.0" in text


async def test_a_pipeline_runs_on_a_partitioned_queue_on_a_cluster(
    cluster: ClusterGroup, name: str, tmp_path: Path
) -> None:
    config = settings(
        tmp_path, redis_url=cluster.url, redis_cluster=True, partitions=PARTS, queue_name=name
    )
    async with DistributedPipelineManager(settings=config, handlers=build_registry(config)) as m:
        result = await m.run(spec("replay.json"))
        assert result.status == RunStatus.SUCCEEDED and result.fix_rounds == 1
        listed = await m.list_runs()
        assert [r.run_id for r in listed] == [result.run_id]


def test_agentic_pipeline_run_on_a_cluster_starts_workers_with_the_same_topology(
    cluster: ClusterGroup, name: str, tmp_path: Path
) -> None:
    """`--cluster --partitions` on the command line only: the per-type workers it starts
    must get them too, or they would refuse the queue's stored partition count."""
    env = agentic_env(cluster.url, name)
    env.pop("AGENTIC_REDIS_CLUSTER", None)
    env.pop("AGENTIC_PARTITIONS", None)
    ran = subprocess.run(
        agentic_argv("--cluster", "--partitions", str(PARTS), "pipeline", "run",
                     str(ROOT / "examples/calculator/spec.json"), "--json", "--workers", "yes",
                     "--redis", "external"),
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=100,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-2000:]
    (result,) = json.loads(ran.stdout)
    assert result["status"] == "succeeded" and result["fix_rounds"] == 1


async def test_cluster_mode_against_a_plain_server_is_a_clear_error(redis_url: str) -> None:
    with pytest.raises(TopologyError, match="cluster"):
        await RedisTaskQueue("x", redis_url, cluster=True).connect()


async def test_a_plain_client_pointed_at_a_cluster_node_is_told_to_use_cluster_mode(
    cluster: ClusterGroup,
) -> None:
    q = RedisTaskQueue("x", cluster.url)
    with pytest.raises(TopologyError, match="cluster=True"):
        await q.connect()


def test_the_cli_reports_topology_mistakes_as_usage_errors(
    cluster: ClusterGroup, redis_url: str, name: str
) -> None:
    for url, argv in ((cluster.url, ()), (redis_url, ("--cluster",))):
        out = subprocess.run(
            agentic_argv(*argv, "info"), env=agentic_env(url, name), cwd=ROOT,
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert out.returncode == 2, out.stderr
        assert "Traceback" not in out.stderr and "cluster" in out.stderr


async def test_the_queue_keys_are_spread_over_every_primary(
    cluster: ClusterGroup, cq: Callable[..., RedisTaskQueue], name: str
) -> None:
    q = cq()
    await q.connect()
    await q.enqueue_many(_tasks([f"k{i}" for i in range(60)]))
    raw = RedisCluster.from_url(cluster.url)
    try:
        keys = [k.decode() async for k in raw.scan_iter(match=f"agentic:{{{name}*", count=1000)]
    finally:
        await raw.aclose()
    assert len(keys) > 60
    assert {cluster.node_for_key(k) for k in keys} == set(cluster.primaries())


async def test_limits_are_global_across_a_clusters_partitions(
    cluster: ClusterGroup, cq: Callable[..., RedisTaskQueue], name: str
) -> None:
    """Concurrency 2 and a fleet-wide pause hold over 6 partitions on 3 primaries: the
    limits live under the queue-wide tag, checked after each partition's claim."""
    a, b = cq(), cq()
    await a.connect()
    await b.connect()
    await a.set_limit("noop", concurrency=2)
    ids = [f"t{i}" for i in range(24)]
    await a.enqueue_many(_tasks(ids))
    assert len({cluster.node_for_key(a.keys_for(i).task(i)) for i in ids}) == 3
    claimed = (await a.claim_ready("wa", 20)).tasks + (await b.claim_ready("wb", 20)).tasks
    assert len(claimed) == 2
    status = (await a.get_limits())["noop"]
    assert status.running == 2
    sizes = await a.get_queue_size()
    assert (sizes["pending"], sizes["processing"]) == (22, 2)
    first = claimed[0]
    owner = a if first.task_id in a._leases else b
    await owner.back_off_task(first.task_id, first.lease_token, 30)
    assert (await a.get_limits())["noop"].paused_for > 25
    other = b if owner is a else a
    other._gate_woken()
    await asyncio.sleep(1.05)  # past any hint: the limits are asked again, and refuse
    assert (await other.claim_ready("w", 20)).tasks == []
    await a.remove_limit("noop")
    await asyncio.sleep(1.05)
    assert (
        len((await b.claim_ready("wb", 30)).tasks) + len((await a.claim_ready("wa", 30)).tasks)
        == 23
    )  # all but the one still running (the backed-off one is back)
