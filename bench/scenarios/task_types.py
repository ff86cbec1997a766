"""Scenario M (issue 18's "scenario I"; the bench's I is the dashboard): the claim rate
against the number of task types and against the pending depth.

One caller claims 10 and completes them (settle_many, one call), as a Worker does, on a
queue whose pending tasks are spread round-robin over T types, serving every type (the
types named in each claim, as a Worker passes its registry's; and, for the registered
case, with no types named, which reads the queue's type set). At most half of the
tasks is claimed (200 claims at most), so every type stays pending the whole time. Cases:

    types T        T = 1, 10, 100, 1,000, every type pending
    registered     10,000 types known to the queue (each had a task, since finished), 10
                   of them pending; the claim names all 10,000 (a Worker serving them all)
                   or none
    depth D        1 type with D tasks pending (1,000 / 10,000 / 100,000 / 1,000,000)

The target (issue 18): every case >= 0.8x the 1-type rate.
"""

from __future__ import annotations

import time
import uuid
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

from bench.harness.context import Bench, Row, clear_keys
from bench.harness.payloads import chunks, payload
from utils.redis_queue import RedisTaskQueue, Settlement
from utils.redis_queue.keys import queue_index

TARGET_M_RATIO = 0.8
CLAIM = 10
TURNS = 10  # each case's claims in this many blocks, the cases taking turns
MAX_ROUNDS = 200  # claims per case: at 10,000 types one takes ~0.2 s


def _specs(n: int, types: list[str]) -> list[dict[str, Any]]:
    return [
        {"task_id": uuid.uuid4().hex, "task_type": types[i % len(types)], "payload": payload(i)}
        for i in range(n)
    ]


@dataclass
class Case:
    label: str
    types: list[str]
    pending: int
    served: list[str] | None  # the types each claim names (None: none, the type set's)
    registered: int = 0  # types known to the queue from finished tasks
    queue: RedisTaskQueue | None = None
    done: int = 0
    wall_s: float = 0.0
    claim_s: float = 0.0
    calls: int = 0

    @property
    def rounds(self) -> int:  # claims, leaving half of every type pending
        return min(MAX_ROUNDS, self.pending // 2 // CLAIM)

    def report(self, base: float) -> dict[str, Any]:
        rate = self.done / self.wall_s
        return {"case": self.label, "types": len(self.types), "registered": self.registered,
                "pending": self.pending, "named": self.served is not None,
                "tasks_per_s": rate, "ratio": rate / base,
                "claim_ms": self.claim_s / max(1, self.calls) * 1e3}  # fmt: skip


async def _fill(queue: RedisTaskQueue, case: Case) -> None:
    if case.registered:  # types the queue knows from tasks long finished
        known = [f"r{i}" for i in range(case.registered)]
        for chunk in chunks(_specs(case.registered, known), 1_000):
            await queue.enqueue_many(chunk)
        while (batch := await queue.claim_ready("m-seed", 1_000)).tasks:
            await queue.settle_many(Settlement(t.task_id, t.lease_token, 1) for t in batch.tasks)
        if case.served is not None:
            case.served = known + case.types
    for chunk in chunks(_specs(case.pending, case.types), 1_000):
        await queue.enqueue_many(chunk)


async def _claim_block(case: Case, claims: int) -> None:
    """`claims` rounds of claim-of-10 + one settle_many, timed into the case."""
    assert case.queue is not None
    started = time.perf_counter()
    for _ in range(claims):
        t0 = time.perf_counter()
        batch = await case.queue.claim_ready("m-worker", CLAIM, task_types=case.served)
        case.claim_s += time.perf_counter() - t0
        case.calls += 1
        if not batch.tasks:
            raise RuntimeError(f"case {case.label}: the queue ran dry")
        await case.queue.settle_many(Settlement(t.task_id, t.lease_token, 1) for t in batch.tasks)
        case.done += len(batch.tasks)
    case.wall_s += time.perf_counter() - started


def _cases(quick: bool) -> list[Case]:
    pending = 4_000 if quick else 20_000
    cases = []
    for t in (1, 10, 100, 1_000):
        types = [f"t{i}" for i in range(t)]
        cases.append(Case(f"t{t}", types, max(pending, 4 * t), types))
    ten = [f"t{i}" for i in range(10)]
    registered = 1_000 if quick else 10_000
    cases.append(Case("reg", ten, pending, ten, registered))
    cases.append(Case("regall", ten, pending, None, registered))
    for depth in (1_000, 10_000) if quick else (1_000, 10_000, 100_000, 1_000_000):
        cases.append(Case(f"d{depth}", ["t0"], depth, ["t0"]))
    return cases


async def scenario_m(bench: Bench) -> Row:
    """Every case's queue is filled first; then the cases take turns, a tenth of their
    claims at a time, so load from other processes falls on all of them alike."""
    cases = _cases(bench.sizes.enqueue_one < 1_000)
    names = [f"{bench.queue_name}-m{c.label}" for c in cases]
    try:
        async with AsyncExitStack() as stack:
            for case, name in zip(cases, names, strict=True):
                await clear_keys(bench.admin, name)
                queue = RedisTaskQueue(queue_name=name, redis_url=bench.url)
                case.queue = await stack.enter_async_context(queue)
                await _fill(queue, case)
            for case in cases:  # warm-up: scripts loaded, connections open
                await _claim_block(case, 1)
                case.done = case.calls = 0
                case.wall_s = case.claim_s = 0.0
            for turn in range(TURNS):
                for case in cases:
                    share = (case.rounds - 1) // TURNS
                    await _claim_block(case, share + (turn < (case.rounds - 1) % TURNS))
    finally:
        for name in names:
            await clear_keys(bench.admin, name)
            await bench.admin.srem(queue_index("agentic"), name)
    base = cases[0].done / cases[0].wall_s
    reports = [case.report(base) for case in cases]
    worst = min(reports, key=lambda c: c["ratio"])
    shown = ", ".join(f"{_label(c)} {c['tasks_per_s']:,.0f}/s ({c['ratio']:.2f}x)" for c in reports)
    return Row(
        key="M",
        name="claim 10 + settle, against task types and depth",
        measured=shown,
        baseline=f"1 type {base:,.0f} tasks/s",
        ratio=f"{worst['ratio']:.2f}x worst ({_label(worst)})",
        target=f">= {TARGET_M_RATIO}x the 1-type rate",
        hit=worst["ratio"] >= TARGET_M_RATIO,
        data={"claim": CLAIM, "cases": reports},
    )


def _label(case: dict[str, Any]) -> str:
    if case["registered"]:
        named = "named" if case["named"] else "none named"
        return f"{case['registered']:,} registered/{case['types']} pending ({named})"
    if case["case"].startswith("d"):
        return f"depth {case['pending']:,}"
    return f"{case['types']:,} type" + ("s" if case["types"] > 1 else "")
