"""Scenario G: the same workload on three layouts of one queue, in the same run:
(1) the bench's own Redis, 1 partition; (2) a private 3-primary (+3 replica) Redis Cluster,
1 partition; (3) that cluster, 6 partitions. Per layout: enqueue() one at a time and
enqueue_many() in chunks (interleaved blocks, with raw LPUSH baselines on both servers),
`agentic worker` processes draining pre-enqueued no-op tasks, and Redis CPU per task on
each primary (INFO cpu deltas, net of each node's idle CPU). Also on (3): durable enqueue
(WAIT for 1 replica) against plain enqueue in the same blocks, and the rank error of
mixed-priority tasks drained across partitions (with (1) as the control).

The cluster (tests/support/topologies.py's ClusterGroup, persistence off like the bench's
own server) starts and ends inside the scenario; its keys are FLUSHALLed between steps."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from bench.harness.config import QUICK, TASK_TYPE
from bench.harness.context import Bench, Row, fmt_rate
from bench.harness.nodes import Node, NodeCpu, close_nodes, cluster_nodes, idle_rates
from bench.harness.payloads import payload_bytes, task_dicts
from bench.scenarios.cluster_enqueue import (
    Stream,
    enqueue_chunk,
    enqueue_each,
    interleave,
    lpush_each,
    lpush_pipelined,
    node_summary,
)
from bench.scenarios.cluster_layouts import Layout, drain, rank_run
from tests.support.topologies import ClusterGroup
from utils.redis_queue import RedisTaskQueue, TaskPriority

SHARE_TOLERANCE = 0.2  # (3): each primary within 20% of a third of the primaries' CPU
PARTITIONS = 6
RANK_SEED = 7


@dataclass(frozen=True)
class GSizes:
    enqueue_one: int  # per stream: a, a', (1), (2), (3), (3) durable
    enqueue_many: int  # per stream: b, b', (1), (2), (3); in chunks of 1,000
    drain: int  # tasks pre-enqueued per drain
    drain_processes: tuple[int, ...]  # `agentic worker` processes, one drain each
    rank: int  # mixed-priority tasks for the rank error
    rank_processes: int = 2
    blocks: int = 10  # interleaved blocks of enqueue()
    warmup: int = 60


G_FULL = GSizes(3_000, 20_000, 10_000, (1, 2), 3_000)
G_QUICK = GSizes(300, 3_000, 1_000, (1,), 300)


@contextlib.asynccontextmanager
async def three_layouts(bench: Bench) -> AsyncIterator[tuple[dict[str, Layout], RedisCluster]]:
    """The layouts, on the bench's Redis and a cluster started here (ended on the way out)."""
    # No persistence, like the bench's own server: a later --appendonly overrides the
    # "yes" that ClusterGroup passes first.
    group = ClusterGroup(3, 1, "--appendonly", "no")
    nodes: list[Node] = []
    admin: RedisCluster | None = None
    try:
        await asyncio.to_thread(group.start)
        nodes = cluster_nodes(group.ports, group.primaries())
        admin = RedisCluster.from_url(group.url)
        env = {"AGENTIC_REDIS_CLUSTER": "1"}
        single = [Node("single", "primary", bench.admin)]
        layouts = {
            "1": Layout(
                "1", "single Redis, 1 partition", bench.url, False, 1,
                bench.queue_name, bench.admin, bench.admin, single,
            ),
            "2": Layout(
                "2", "cluster, 1 partition", group.url, True, 1, "bench-g1", admin,
                nodes[0].client, nodes, {**env, "AGENTIC_PARTITIONS": "1"},
            ),
            "3": Layout(
                "3", f"cluster, {PARTITIONS} partitions", group.url, True, PARTITIONS,
                "bench-g6", admin, nodes[0].client, nodes,
                {**env, "AGENTIC_PARTITIONS": str(PARTITIONS)},
            ),
        }  # fmt: skip
        yield layouts, admin
    finally:
        if admin is not None:
            await admin.aclose()
        await close_nodes(nodes)
        await asyncio.to_thread(group.cleanup)


async def warm_up(bench: Bench, layout: Layout, queue: RedisTaskQueue, n: int) -> None:
    """Open the connections and load the scripts on every node, then forget the tasks."""
    for spec in task_dicts(n):
        await queue.enqueue(spec["task_id"], TASK_TYPE, spec["payload"])
    await layout.clear(bench)


async def enqueue_phases(
    bench: Bench, layouts: dict[str, Layout], admin: RedisCluster, g: GSizes, idle: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """enqueue() one at a time and enqueue_many() in chunks, every stream interleaved."""
    raw_single = Redis.from_url(bench.url)
    l1, l2, l3 = layouts["1"], layouts["2"], layouts["3"]
    raw_key = f"agentic:{{{l2.queue_name}}}:bench-raw:g"  # one key: one node of the cluster
    queues = {key: layout.queue() for key, layout in layouts.items()}
    out: dict[str, dict[str, Any]] = {}
    try:
        for key, queue in queues.items():
            await queue.connect()
            await warm_up(bench, layouts[key], queue, g.warmup)
        for client in (raw_single, admin):
            await client.lpush(raw_key, b"warm")
            await client.delete(raw_key)

        def node_cpu(layout: Layout) -> NodeCpu:
            return NodeCpu(layout.nodes)

        one = [
            Stream("a", lpush_each(raw_single, bench.raw_key("g")), raw(g.enqueue_one),
                   node_cpu(l1)),
            Stream("a'", lpush_each(admin, raw_key), raw(g.enqueue_one), node_cpu(l2)),
            *(Stream(k, enqueue_each(queues[k]), task_dicts(g.enqueue_one),
                     node_cpu(layouts[k])) for k in ("1", "2", "3")),
            Stream("3d", enqueue_each(queues["3"], durable=True), task_dicts(g.enqueue_one),
                   node_cpu(l3)),
        ]  # fmt: skip
        await interleave(one, g.blocks)
        out["enqueue_one"] = {s.key: s.summary(idle) for s in one}
        await clear_all(bench, layouts, raw_single, raw_key)
        many = [
            Stream("b", lpush_pipelined(raw_single, bench.raw_key("g")), raw(g.enqueue_many),
                   node_cpu(l1)),
            Stream("b'", lpush_pipelined(admin, raw_key), raw(g.enqueue_many), node_cpu(l2)),
            *(Stream(k, enqueue_chunk(queues[k]), task_dicts(g.enqueue_many),
                     node_cpu(layouts[k])) for k in ("1", "2", "3")),
        ]  # fmt: skip
        await interleave(many, max(1, g.enqueue_many // bench.sizes.chunk))
        out["enqueue_many"] = {s.key: s.summary(idle) for s in many}
    finally:
        await clear_all(bench, layouts, raw_single, raw_key)
        for queue in queues.values():
            await queue.close()
        await raw_single.aclose()
    return out


def raw(n: int) -> list[bytes]:
    return [payload_bytes(i) for i in range(n)]


async def clear_all(bench: Bench, layouts: dict[str, Layout], raw: Redis, raw_key: str) -> None:
    await raw.delete(bench.raw_key("g"))
    await layouts["1"].clear(bench)
    await layouts["3"].clear(bench)  # the cluster: layouts (2) and (3) and the raw key


def partitions_per_primary(layout: Layout, admin: RedisCluster) -> dict[str, int]:
    """How many of the layout's partitions (hash tags) each primary serves."""
    counts: dict[str, int] = {n.label: 0 for n in layout.nodes if n.role == "primary"}
    for part in layout.queue().layout.parts:
        node = admin.get_node_from_key(part.pending(TASK_TYPE))
        if node is not None:
            counts[str(node.port)] = counts.get(str(node.port), 0) + 1
    return counts


def mixed_priorities(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    levels = list(TaskPriority)
    return [{**spec, "priority": rng.choice(levels)} for spec in task_dicts(n)]


def with_ratios(results: dict[str, dict[str, Any]], raw: dict[str, float]) -> None:
    """Each layout's rate as a ratio to layout (1)'s and to the raw rates given."""
    single = results["1"]["tasks_per_s"]
    for key in ("1", "2", "3"):
        rate = results[key]["tasks_per_s"]
        results[key]["ratio_to_single"] = rate / single
        results[key]["ratio_to_raw"] = {name: rate / r for name, r in raw.items()}


def share_ok(result: dict[str, Any]) -> bool:
    third = 1 / 3
    shares = result["primary_share"].values()
    return all(abs(s - third) <= SHARE_TOLERANCE * third for s in shares)


async def scenario_g(bench: Bench) -> Row:
    g = G_QUICK if bench.sizes == QUICK else G_FULL
    data: dict[str, Any] = {"sizes": asdict(g), "partitions": PARTITIONS}
    async with three_layouts(bench) as (layouts, admin):
        idle = await idle_rates([*layouts["1"].nodes, *layouts["3"].nodes])
        data["idle_cpu_ms_per_s"] = {k: v * 1e3 for k, v in idle.items()}
        data["layouts"] = {k: {"label": v.label, "partitions": v.partitions, "cluster": v.cluster}
                           for k, v in layouts.items()}  # fmt: skip
        data["cluster_primaries"] = [n.label for n in layouts["3"].nodes if n.role == "primary"]
        data.update(await enqueue_phases(bench, layouts, admin, g, idle))
        data["partitions_per_primary"] = partitions_per_primary(layouts["3"], admin)
        one, many = data["enqueue_one"], data["enqueue_many"]
        with_ratios(one, {"a": one["a"]["tasks_per_s"], "a'": one["a'"]["tasks_per_s"]})
        with_ratios(many, {"b": many["b"]["tasks_per_s"], "b'": many["b'"]["tasks_per_s"]})
        data["durable"] = {
            "rate_ratio": one["3d"]["tasks_per_s"] / one["3"]["tasks_per_s"],
            "p50_ratio": one["3d"]["p50_ms"] / one["3"]["p50_ms"],
            "min_replicas": 1,
        }
        data["drain"] = {}
        for processes in g.drain_processes:
            runs = {}
            for key, layout in layouts.items():
                print(f"  G drain ({key}), {processes} process(es) ...", flush=True)
                run = await drain(bench, layout, task_dicts(g.drain), processes)
                run.update(node_summary(run.pop("node_cpu"), run["window_tasks"], idle))
                runs[key] = run
                await layout.clear(bench)
            with_ratios(runs, {"a": bench.raw_rate})
            data["drain"][str(processes)] = runs
        data["rank"] = {}
        for key in ("3", "1"):
            print(f"  G rank error ({key}) ...", flush=True)
            specs = mixed_priorities(g.rank, RANK_SEED)
            data["rank"][key] = await rank_run(bench, layouts[key], specs, g.rank_processes)
            await layouts[key].clear(bench)
    return g_row(data)


def g_row(data: dict[str, Any]) -> Row:
    top = max(data["drain"], key=int)
    drained = data["drain"][top]
    checked = [data["enqueue_one"]["3"], data["enqueue_many"]["3"]]
    checked += [runs["3"] for runs in data["drain"].values()]
    hit = all(share_ok(r) for r in checked)
    rank = data["rank"]["3"]["rank_error"]
    return Row(
        key="G",
        name=f"cluster: (3) {PARTITIONS} partitions vs (1) one Redis (G table)",
        measured=(
            f"(3) drain, {top} proc: {fmt_rate(drained['3']['tasks_per_s'], 'tasks')}; "
            f"rank error {rank:.1%}"
        ),
        baseline=f"(1) {fmt_rate(drained['1']['tasks_per_s'], 'tasks')}",
        ratio=f"{drained['3']['ratio_to_single']:.2f}x",
        target="(3) CPU share per primary 1/3 +-20%",
        hit=hit,
        data=data,
    )
