"""Redis CPU per node (G): INFO cpu (used_cpu_sys + used_cpu_user) of every node of a
layout (the one server, or each primary and replica of a cluster), summed over one or more
`async with` blocks, so a scenario can split the server side of a task by node."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from redis.asyncio import Redis


@dataclass(frozen=True)
class Node:
    """One redis-server: `label` names it in the report ("single", "7001", ...)."""

    label: str
    role: str  # "primary" or "replica"
    client: Redis  # a plain connection to this node (INFO is per node, never routed)


async def node_cpu_s(client: Redis) -> float:
    cpu = await client.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


async def sample(nodes: list[Node]) -> dict[str, float]:
    values = await asyncio.gather(*(node_cpu_s(n.client) for n in nodes))
    return {n.label: v for n, v in zip(nodes, values, strict=True)}


@dataclass
class NodeCpu:
    """CPU seconds each node used inside the `async with` blocks, and their wall time."""

    nodes: list[Node]
    cpu_s: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0
    _start: dict[str, float] = field(default_factory=dict)
    _t0: float = 0.0

    async def __aenter__(self) -> Self:
        self._start = await sample(self.nodes)
        self._t0 = time.perf_counter()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.wall_s += time.perf_counter() - self._t0
        end = await sample(self.nodes)
        for label, value in end.items():
            self.cpu_s[label] = self.cpu_s.get(label, 0.0) + value - self._start[label]

    def primaries(self) -> list[str]:
        return [n.label for n in self.nodes if n.role == "primary"]

    def per_task_us(self, tasks: int, idle: dict[str, float] | None = None) -> dict[str, float]:
        """CPU us per task on each node; with `idle` (CPU s per s, idle_rates()) what the
        node burns when nobody calls it (cron, cluster bus) is taken out first."""
        out = {}
        for label, seconds in self.cpu_s.items():
            background = (idle or {}).get(label, 0.0) * self.wall_s
            out[label] = max(0.0, seconds - background) / tasks * 1e6
        return out

    def shares(self, tasks: int, idle: dict[str, float] | None = None) -> dict[str, float]:
        """Each primary's fraction of the primaries' CPU (net of idle)."""
        per = self.per_task_us(tasks, idle)
        total = sum(per[p] for p in self.primaries())
        return {p: per[p] / total if total else 0.0 for p in self.primaries()}


async def idle_rates(nodes: list[Node], seconds: float = 1.0) -> dict[str, float]:
    """CPU seconds per second each node uses with no client calling it."""
    probe = NodeCpu(nodes)
    async with probe:
        await asyncio.sleep(seconds)  # a sampling interval: nothing to wait for
    return {label: v / probe.wall_s for label, v in probe.cpu_s.items()}


def cluster_nodes(ports: list[int], primaries: list[int]) -> list[Node]:
    """Nodes of a cluster on 127.0.0.1, primaries first."""
    ordered = sorted(ports, key=lambda p: (p not in primaries, p))
    return [
        Node(str(p), "primary" if p in primaries else "replica", Redis(host="127.0.0.1", port=p))
        for p in ordered
    ]


async def close_nodes(nodes: list[Node]) -> None:
    for node in nodes:
        await node.client.aclose()
