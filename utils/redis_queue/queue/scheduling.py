"""Scheduling: periodic schedules kept in Redis (queue-wide keys: definitions in
`schedules`, next due times in `schedule_due`), and the scheduler's step that enqueues
their due ticks. Any number of schedulers (every worker runs one, scheduler.py) may step
at once: a tick's task id is a function of its schedule and due time, so a second
enqueue of it is an idempotent duplicate, and lua/schedule_advance.lua moves a due time
only if it is still the one the scheduler read (a compare-and-set). The calendar and the
missed-tick policy are in schedules.py."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .. import codec, scripts
from ..errors import InvalidSchedule, InvalidTaskError, SerializationError
from ..models import TaskPriority, coerce_priority
from ..schedules import Schedule, ScheduleInfo, Ticks, tick_id
from .produce import Producer

__all__ = ["SCHEDULER_BATCH", "SchedulerStep", "Scheduling"]

log = logging.getLogger("agentic.scheduler")

SCHEDULER_BATCH = 100  # due schedules one scheduler step reads (it steps again at once if full)


@dataclass(frozen=True, slots=True)
class SchedulerStep:
    """What one scheduler step did: ticks it enqueued (duplicates of another scheduler's
    included), schedules it advanced, and how long until the next one is due (None: no
    schedule, or none it could advance: wait a poll interval)."""

    enqueued: int
    advanced: int
    next_due_in: float | None


class Scheduling(Producer):
    async def schedule(
        self,
        name: str,
        *,
        cron: str | None = None,
        every: float | None = None,
        task_type: str,
        payload: Mapping[str, Any] | None = None,
        priority: int | TaskPriority | str = TaskPriority.NORMAL,
        timezone: str = "UTC",
        catch_up: int = 1,
    ) -> ScheduleInfo:
        """Add (or replace) the periodic schedule `name`: a `task_type` task with `payload`
        at `priority`, enqueued on the `cron` expression (in `timezone`) or every `every`
        seconds (the first tick one interval from now). After an outage the latest
        `catch_up` missed ticks are enqueued and older ones skipped. Replacing a schedule
        starts its calendar afresh."""
        # Checked as an enqueue would check them, before anything is stored.
        text = codec.dumps(dict(payload or {}), "payload", self.max_payload_bytes)
        prio = int(coerce_priority(priority))
        now_ms = await self._server_ms()
        try:
            definition = Schedule(
                name=name,
                task_type=task_type,
                cron=cron,
                every=every,
                payload=json.loads(text),
                priority=prio,
                timezone=timezone,
                catch_up=catch_up,
                anchor_ms=now_ms,
            )
        except TypeError as exc:
            raise InvalidSchedule(str(exc)) from None
        first = definition.first_due(now_ms)
        await self.run(
            scripts.schedule_set(
                self.keys, name=name, definition=definition.to_json(), first_due_ms=first
            )
        )
        return ScheduleInfo(definition, first, None, 0)

    async def unschedule(self, name: str) -> bool:
        """Remove a schedule (ticks already enqueued stay). False if there was none."""
        reply = await self.run(scripts.unschedule(self.keys, name=name))
        return int(reply[0]) == 1

    async def list_schedules(self) -> list[ScheduleInfo]:
        """Every schedule, by name, with its next due time and last tick."""
        async with self._command():
            definitions = await self.redis.hgetall(self.keys.schedules)
            due: list[Any] = await self.redis.zrange(self.keys.schedule_due, 0, -1, withscores=True)
            last = await self.redis.hgetall(self.keys.schedule_last)
        due_by = {codec.as_text(k): int(v) for k, v in due}
        last_by = {codec.as_text(k): codec.as_text(v).split() for k, v in last.items()}
        out = []
        for raw_name, text in definitions.items():
            name = codec.as_text(raw_name)
            try:
                definition = Schedule.from_json(codec.as_text(text))
            except InvalidSchedule as exc:
                log.warning("schedule %s is unreadable: %s", name, exc)
                continue
            tick = last_by.get(name, [])
            out.append(
                ScheduleInfo(
                    definition,
                    due_by.get(name),
                    int(tick[0]) if tick else None,
                    int(tick[1]) if len(tick) > 1 else 0,
                )
            )
        return sorted(out, key=lambda info: info.schedule.name)

    async def run_due_schedules(self) -> SchedulerStep:
        """One scheduler step: enqueue the ticks of every schedule due now (server time)
        and advance each. Safe to run from any number of processes at once."""
        enqueued = advanced = 0
        while True:
            due = scripts.schedules_due_reply(
                await self.run(scripts.schedules_due(self.keys, limit=SCHEDULER_BATCH))
            )
            plans: list[tuple[str, int, Schedule, Ticks]] = []
            for name, due_ms, text in due.due:
                try:
                    definition = Schedule.from_json(text)
                except InvalidSchedule as exc:
                    log.warning("schedule %s is unreadable, not run: %s", name, exc)
                    continue
                plans.append((name, due_ms, definition, definition.ticks(due_ms, due.now_ms)))
            # Enqueue first, advance second: a scheduler that dies in between leaves the
            # schedule due, and the next one's enqueue of the same ids is a duplicate.
            sent = await self._enqueue_ticks(plans)
            enqueued += sum(len(ticks.due) for _, _, _, ticks in sent)
            replies = await asyncio.gather(
                *(
                    self.run(
                        scripts.schedule_advance(
                            self.keys,
                            name=name,
                            expected_ms=due_ms,
                            next_due_ms=ticks.next_due_ms,
                            last_due_ms=ticks.due[-1],
                            skipped=ticks.skipped,
                        )
                    )
                    for name, due_ms, _, ticks in sent
                )
            )
            moved = sum(int(reply[0]) for reply in replies)
            advanced += moved
            if moved == 0 and due.due:  # unreadable, or another scheduler advanced them
                return SchedulerStep(enqueued, advanced, None)
            if len(due.due) < SCHEDULER_BATCH:
                wait = None
                if due.next_due_ms is not None:
                    wait = max(0.0, (due.next_due_ms - due.now_ms) / 1000)
                return SchedulerStep(enqueued, advanced, 0.0 if moved else wait)

    async def _enqueue_ticks(
        self, plans: list[tuple[str, int, Schedule, Ticks]]
    ) -> list[tuple[str, int, Schedule, Ticks]]:
        """The ticks of every plan in one enqueue_many (1,000 per script call); the plans
        whose ticks are in Redis. A tick refused as input (a payload over a lowered
        max_payload_bytes, say) holds back its own schedule only, which stays due."""

        def items(plan: tuple[str, int, Schedule, Ticks]) -> list[dict[str, Any]]:
            name, _, definition, ticks = plan
            return [
                {
                    "task_id": tick_id(name, at),
                    "task_type": definition.task_type,
                    "payload": definition.payload,
                    "priority": definition.priority,
                    "meta": {"schedule": name, "due_ms": str(at)},
                }
                for at in ticks.due
            ]

        if not plans:
            return []
        try:
            await self.enqueue_many([item for plan in plans for item in items(plan)])
            return plans
        except (InvalidTaskError, SerializationError):
            pass
        sent = []
        for plan in plans:
            try:
                await self.enqueue_many(items(plan))
                sent.append(plan)
            except (InvalidTaskError, SerializationError) as exc:
                log.warning("schedule %s: its tick cannot be enqueued: %s", plan[0], exc)
        return sent

    async def _server_ms(self) -> int:
        async with self._command():
            seconds, micros = await self.redis.time()
        return int(seconds) * 1000 + int(micros) // 1000
