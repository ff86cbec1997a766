"""Limits of a partitioned queue: checked in their own slot, after the claim.

A queue of one partition checks its limits inside the claim script (its limit keys share
the tasks' slot). A partitioned queue's limits must be global, so they stay under the
queue-wide tag `{<queue>}`, which no partition's script can reach on a cluster. Its claim
therefore runs in two steps: the partition's claim leases tasks as usual (leaving alone
those bound by keys this client knows are blocked), then permit.lua, in the limits' slot,
admits and charges them all or nothing per task; the ones it refuses are handed back at
once (back_off with no pause: no attempt counted, their place kept). What an admitted
attempt holds is remembered here and given back by unpermit.lua after its settle; the
lease keeper renews its concurrency slots with its lease (extend_permits.lua), and a slot
whose lease lapsed expires with it, as on one partition.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .. import codec, scripts
from ..errors import LeaseLost, QueueError
from ..models import RedisTask, Settlement, TaskState
from .client import QueueClient

__all__ = ["ACTIVE_TTL", "Gate", "Permit"]

ACTIVE_TTL = 1.0  # seconds a client trusts that the queue has (or has no) limits
HINT_MAX = 1.0  # seconds a blocked key is skipped at most before the limits are asked again


@dataclass(frozen=True, slots=True)
class Permit:
    """What one admitted attempt holds, and what binds its task."""

    held: str  # space-separated limit keys with a slot or tokens to give back
    cost_tokens: int | None
    keys: tuple[str, ...]  # every limit key it is bound by (its type's first)


class Gate(QueueClient):
    _gate: _GateState | None = None  # created by the first claim that needs it

    def _gate_state(self) -> _GateState:
        if self._gate is None:
            self._gate = _GateState()
        return self._gate

    async def _gate_active(self) -> bool:
        """Whether the queue has limits (or pauses), re-read at most every ACTIVE_TTL."""
        state = self._gate_state()
        now = asyncio.get_running_loop().time()
        if now >= state.active_until:
            async with self._command():
                state.active = bool(await self.redis.exists(self.layout.wide.limits))
            state.active_until = now + ACTIVE_TTL
        return state.active

    def _gate_hint(self) -> list[str]:
        """The limit keys known to admit nothing now (for the partition's claim)."""
        if self.partitions == 1 or self._gate is None or not self._gate.blocked:
            return []
        now = asyncio.get_running_loop().time()
        blocked = self._gate.blocked
        for key in [k for k, until in blocked.items() if until <= now]:
            del blocked[key]
        return sorted(blocked)

    def _gate_wait(self) -> float | None:
        """Seconds until the first blocked key is asked about again (None: none)."""
        if self._gate is None or not self._gate.blocked:
            return None
        now = asyncio.get_running_loop().time()
        return max(0.0, min(self._gate.blocked.values()) - now)

    def _gate_held_back(self) -> dict[str, int]:
        """The keys known to hold tasks back now, with how many they last held back (what a
        claim that skipped them reports: there is work, waiting for a limit)."""
        if self._gate is None:
            return {}
        return {k: self._gate.last_held_back.get(k, 1) for k in self._gate_hint()}

    def _gate_woken(self) -> None:
        """A wake-up came (a settle freed something): ask the limits again at once."""
        if self._gate is not None:
            self._gate.blocked.clear()

    def permit_of(self, task_id: str) -> str:
        """The limit keys whose slots the running task holds ('' for none)."""
        permit = self._gate.permits.get(task_id) if self._gate is not None else None
        return permit.held if permit is not None else ""

    async def _gate_admit(
        self, tasks: list[RedisTask], held_back: dict[str, int]
    ) -> list[RedisTask]:
        """The tasks the limits admit (charged); the others handed back, counted into
        `held_back` by the key that refused them."""
        if not tasks or not await self._gate_active():
            return tasks
        items = [scripts.PermitItem(t.task_id, t.task_type, t.limits, t.cost_tokens) for t in tasks]
        call = scripts.permit(
            self.layout.wide, lease_ms=int(self.lease_seconds * 1000), tasks=items
        )
        try:
            reply = scripts.permit_reply(await self.run(call))
        except QueueError:
            # The limits' slot is away (its primary failing over): the tasks go back now,
            # uncounted, rather than wait for their leases to lapse (which would count).
            with contextlib.suppress(QueueError):
                await self._refuse(tasks)
            raise
        state = self._gate_state()
        now = asyncio.get_running_loop().time()
        for key, count in reply.held_back.items():
            held_back[key] = held_back.get(key, 0) + count
            state.last_held_back[key] = count
            wait = HINT_MAX if reply.retry_in_ms is None else reply.retry_in_ms / 1000
            state.blocked[key] = now + min(HINT_MAX, wait)
        admitted, refused = [], []
        for task, held in zip(tasks, reply.held, strict=True):
            if held is None:
                refused.append(task)
                continue
            keys = (task.task_type, *(k for k in task.limits if k != task.task_type))
            state.permits[task.task_id] = Permit(held, task.cost_tokens, keys)
            admitted.append(task)
        if refused:
            await self._refuse(refused)
        if reply.held_back:
            self.telemetry.held_back(reply.held_back)
        return admitted

    async def _refuse(self, tasks: list[RedisTask]) -> None:
        """Leased tasks the limits refused go back at their place, no attempt counted."""
        by_partition: dict[int, list[RedisTask]] = {}
        for task in tasks:
            by_partition.setdefault(self.layout.index_of(task.task_id), []).append(task)
        for index, group in by_partition.items():
            items = [
                scripts.SettleItem(t.task_id, str(t.lease_token or ""), pause_ms=0) for t in group
            ]
            call = scripts.settle_many(
                self.layout.parts[index],
                keep_ms=self.task_ttl_seconds * 1000,
                use_dlq=self.enable_dlq,
                policy=self.retry_policy,
                max_retries=self.max_retries,
                items=items,
                events=self.events_arg,
            )
            await self.run(call)
            for t in group:
                self._leases.pop(t.task_id, None)

    async def _gate_release(
        self, settled: Iterable[tuple[Settlement, TaskState | Exception]]
    ) -> None:
        """Give back what settled attempts held; pause what their RateLimited handlers
        named; wake the workers waiting on what was freed, in every partition."""
        if self._gate is None:
            return
        permits = self._gate.permits
        items: list[scripts.HeldItem] = []
        pauses: list[tuple[int, Sequence[str]]] = []
        for settlement, outcome in settled:
            if isinstance(outcome, Exception):
                if isinstance(outcome, LeaseLost):  # the slot is the new holder's now
                    permits.pop(settlement.task_id, None)
                continue  # not recorded (Redis away): given back when it is
            permit = permits.pop(settlement.task_id, None)
            if settlement.pause is not None:
                named = settlement.pause_limits or (permit.keys if permit else ())
                pauses.append((max(1, round(settlement.pause * 1000)), named))
            if permit is None:
                continue
            used = 0 if settlement.pause is not None else settlement.tokens_used
            items.append(
                scripts.HeldItem(settlement.task_id, permit.held, permit.cost_tokens, used)
            )
        if not items and not pauses:
            return
        types: set[str] = set()
        pause_ms = max((ms for ms, _ in pauses), default=0)
        names: list[str] = []
        for _, keys in pauses:
            names += [n for n in keys if n not in names]
        call = scripts.unpermit(self.layout.wide, items=items, pause_ms=pause_ms, pause_keys=names)
        types.update(codec.as_text(t) for t in await self.run(call))
        if pauses:
            self._gate_state().active_until = float("-inf")  # a pause may be its first limit
        if types:
            await self._wake_everywhere(sorted(types))

    async def _gate_settled(self, task_id: str, state: TaskState) -> None:
        """complete_task, fail_task and release_task of a partitioned queue's task."""
        if self._gate is not None and task_id in self._gate.permits:
            await self._gate_release([(Settlement(task_id, None), state)])

    async def _wake_everywhere(self, types: Sequence[str]) -> None:
        """One wake-up token per type in every partition (a woken claim chains the next)."""
        async with self._command():
            for keys in self.layout.parts:
                pipe = self.redis.pipeline(transaction=False)
                for task_type in types:
                    pipe.lpush(keys.wake(task_type), "1")
                    pipe.ltrim(keys.wake(task_type), 0, 0)
                await pipe.execute()


class _GateState:
    __slots__ = ("active", "active_until", "blocked", "last_held_back", "permits")

    def __init__(self) -> None:
        self.active = False
        self.active_until = float("-inf")
        self.blocked: dict[str, float] = {}  # limit key -> loop time it is asked about again
        self.permits: dict[str, Permit] = {}  # task id -> what its running attempt holds
        self.last_held_back: dict[str, int] = {}  # limit key -> tasks it last held back
