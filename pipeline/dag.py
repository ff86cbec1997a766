"""The dependency graph of a spec's dev subtasks (`depends_on`): its checks and the
numbers the flow and the priority rules read.

A subtask is submitted once every subtask it depends on has passed its dev stage;
independent branches run at once. QA, fix and deploy still run once, over the whole
workspace, after every dev subtask passed (the workspace is one codebase: a test may
import what any subtask wrote).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

__all__ = ["dependants", "find_cycle", "graph_problems"]

SHOWN_IN_CYCLE = 12  # ids a cycle's message names before "..."


def graph_problems(edges: Mapping[str, Sequence[str]]) -> list[str]:
    """What is wrong with `edges` (subtask id -> the ids it depends on), one line per
    problem naming the ids: a self-dependency, an unknown id, an id listed twice, a cycle."""
    problems = []
    for node, needs in edges.items():
        if node in needs:
            problems.append(f"subtask {node!r} depends on itself")
        unknown = sorted({n for n in needs if n not in edges})
        if unknown:
            problems.append(f"subtask {node!r} depends on unknown subtask(s) {', '.join(unknown)}")
        repeated = sorted(n for n, times in Counter(needs).items() if times > 1)
        if repeated:
            problems.append(f"subtask {node!r} lists {', '.join(repeated)} more than once")
    cycle = find_cycle(edges)
    if cycle:
        shown = cycle if len(cycle) <= SHOWN_IN_CYCLE else [*cycle[:SHOWN_IN_CYCLE], "..."]
        size = f" ({len(cycle) - 1} subtasks)" if len(cycle) > SHOWN_IN_CYCLE else ""
        problems.append("dependency cycle: " + " -> ".join(shown) + size)
    return problems


def find_cycle(edges: Mapping[str, Sequence[str]]) -> list[str] | None:
    """One cycle (its ids, the first repeated at the end), or None; self-loops and
    unknown ids are left to graph_problems. Iterative, so 10,000 subtasks in a chain
    do not reach Python's recursion limit."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in edges:
        if state.get(root):
            continue
        path: list[str] = []
        stack: list[tuple[str, int]] = [(root, 0)]
        while stack:
            node, index = stack.pop()
            if index == 0:
                state[node] = 1
                path.append(node)
            needs = [n for n in edges.get(node, ()) if n in edges and n != node]
            if index < len(needs):
                stack.append((node, index + 1))
                nxt = needs[index]
                if state.get(nxt) == 1:
                    return [*path[path.index(nxt) :], nxt]
                if not state.get(nxt):
                    stack.append((nxt, 0))
            else:
                state[node] = 2
                path.pop()
    return None


def dependants(edges: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """For each subtask, how many others wait on it, directly or through others. The
    graph must be acyclic (check graph_problems first). Each node's set of dependants is
    a bitset (a Python int), built in reverse dependency order, so a chain of 10,000
    costs 10,000 ORs of 10,000-bit numbers, not 10^8 steps."""
    index = {node: i for i, node in enumerate(edges)}
    waiting: dict[str, list[str]] = {node: [] for node in edges}
    unmet = {node: 0 for node in edges}
    for node, needs in edges.items():
        for need in set(needs):
            if need in waiting and need != node:
                waiting[need].append(node)
                unmet[node] += 1
    order = [node for node, count in unmet.items() if count == 0]
    for node in order:  # Kahn: grows while it is walked
        for other in waiting[node]:
            unmet[other] -= 1
            if unmet[other] == 0:
                order.append(other)
    reach: dict[str, int] = {}
    for node in reversed(order):
        bits = 0
        for other in waiting[node]:
            bits |= reach[other] | (1 << index[other])
        reach[node] = bits
    return {node: reach.get(node, 0).bit_count() for node in edges}
