"""Periodic schedules: what one is (`Schedule`), its encoding in the `schedules` hash,
and its calendar: when it is due next, and which ticks a scheduler enqueues when it finds
it due (the missed-tick policy).

Missed ticks (a scheduler found a schedule due later than its due time: every worker was
down, or stopped with --no-scheduler): the latest `catch_up` ticks due by now are enqueued
(default 1: one run stands for the outage), older ones are skipped and counted; the next
due time is the first tick after now. A tick's task id is ``sched:<name>:<due ms>``, so
two schedulers that find the same tick enqueue the same id and the second enqueue is an
idempotent duplicate (queue/scheduling.py; lua/schedule_advance.lua moves the due time
once).

Cron expressions are parsed by croniter: five fields, or six where croniter's sixth is the
second ("* * * * * */10": every ten seconds), in the schedule's IANA time zone (zoneinfo),
so "0 9 * * *" in Europe/Paris stays at 09:00 local time across daylight-saving changes.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from .errors import InvalidSchedule
from .keys import validate_task_type
from .new_task import MAX_SECONDS

__all__ = ["MAX_CATCH_UP", "MIN_EVERY", "Schedule", "ScheduleInfo", "Ticks", "tick_id"]

MIN_EVERY = 0.1  # seconds: the shortest interval (a scheduler polls at least every second)
MAX_CATCH_UP = 1000  # ticks one scheduler step may enqueue for one schedule
_SKIP_COUNT_CAP = 100_000  # cron ticks counted as skipped after a very long outage, at most


def tick_id(name: str, due_ms: int) -> str:
    """The task id of a schedule's tick: a pure function of the schedule and its due time."""
    return f"sched:{name}:{due_ms}"


@dataclass(frozen=True, slots=True)
class Ticks:
    """What a scheduler does with a due schedule: enqueue `due` (ms, oldest first),
    count `skipped` older ones, and move the schedule to `next_due_ms`."""

    due: list[int]
    skipped: int
    next_due_ms: int


@dataclass(frozen=True, slots=True)
class Schedule:
    """One periodic schedule: every `every` seconds or on a `cron` expression, it enqueues
    a `task_type` task with `payload` at `priority`."""

    name: str
    task_type: str
    cron: str | None = None
    every: float | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    priority: int = 1
    timezone: str = "UTC"
    catch_up: int = 1
    anchor_ms: int = 0  # `every`: ticks fall at anchor + k * every

    def __post_init__(self) -> None:
        try:
            validate_task_type(self.name)
        except ValueError:
            raise InvalidSchedule(
                f"invalid schedule name {self.name!r}: use 1-64 characters from "
                "A-Z a-z 0-9 _ . - starting with a letter or digit"
            ) from None
        validate_task_type(self.task_type)
        if (self.cron is None) == (self.every is None):
            raise InvalidSchedule("a schedule needs exactly one of cron= and every=")
        if self.every is not None and (
            isinstance(self.every, bool)
            or not isinstance(self.every, int | float)
            or not math.isfinite(self.every)
            or not MIN_EVERY <= self.every <= MAX_SECONDS
        ):
            raise InvalidSchedule(
                f"every= must be a number of seconds from {MIN_EVERY} to {MAX_SECONDS:,}"
            )
        if self.cron is not None and (
            not isinstance(self.cron, str) or not croniter.is_valid(self.cron)
        ):
            raise InvalidSchedule(f"invalid cron expression {self.cron!r}")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise InvalidSchedule(f"unknown time zone {self.timezone!r}") from None
        if isinstance(self.catch_up, bool) or not isinstance(self.catch_up, int):
            raise InvalidSchedule("catch_up must be a whole number")
        if not 1 <= self.catch_up <= MAX_CATCH_UP:
            raise InvalidSchedule(f"catch_up must be from 1 to {MAX_CATCH_UP}")
        if not isinstance(self.payload, dict):
            raise InvalidSchedule("payload must be a JSON object")

    # -- encoding -------------------------------------------------------------------------

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Schedule:
        try:
            data = json.loads(text)
            return cls(**data)
        except (ValueError, TypeError) as exc:
            raise InvalidSchedule(f"unreadable schedule definition: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    # -- calendar -------------------------------------------------------------------------

    def first_due(self, now_ms: int) -> int:
        """The first tick after `now_ms` (for `every`, counted from the anchor)."""
        if self.every is not None:
            return self._every_after(now_ms)
        return self._cron_after(now_ms)

    def ticks(self, due_ms: int, now_ms: int) -> Ticks:
        """The ticks to enqueue for a schedule due at `due_ms` found at `now_ms` (>= due):
        the latest `catch_up` ticks due by now, oldest first."""
        if self.every is not None:
            period = self._period_ms()
            first = max(0, math.ceil((due_ms - self.anchor_ms) / period))
            last = (now_ms - self.anchor_ms) // period
            if last < first:  # due time from an earlier definition: take it as it is
                return Ticks([due_ms], 0, self._every_after(now_ms))
            keep_from = max(first, last - self.catch_up + 1)
            due = [self.anchor_ms + k * period for k in range(keep_from, last + 1)]
            return Ticks(due, keep_from - first, self._every_after(now_ms))
        assert self.cron is not None
        zone = ZoneInfo(self.timezone)
        it = croniter(self.cron, _at(now_ms + 1, zone))  # strictly before: ticks <= now
        kept: list[int] = []
        skipped = 0
        while skipped < _SKIP_COUNT_CAP:
            at = int(it.get_prev(float) * 1000)
            if at < due_ms:
                break
            if len(kept) < self.catch_up:
                kept.append(at)
            else:
                skipped += 1
        if not kept:
            kept = [due_ms]
        return Ticks(sorted(kept), skipped, self._cron_after(now_ms))

    def _period_ms(self) -> int:
        assert self.every is not None
        return max(1, round(self.every * 1000))

    def _every_after(self, now_ms: int) -> int:
        period = self._period_ms()
        k = (now_ms - self.anchor_ms) // period + 1
        return self.anchor_ms + max(1, k) * period

    def _cron_after(self, now_ms: int) -> int:
        assert self.cron is not None
        it = croniter(self.cron, _at(now_ms, ZoneInfo(self.timezone)))
        return int(it.get_next(float) * 1000)


def _at(ms: int, zone: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC).astimezone(zone)


@dataclass(frozen=True, slots=True)
class ScheduleInfo:
    """A schedule as list_schedules() reads it: its definition, when it is due next, its
    last tick and how many ticks the missed-tick policy skipped in all."""

    schedule: Schedule
    next_due_ms: int | None
    last_due_ms: int | None
    skipped: int

    def to_dict(self) -> dict[str, Any]:
        def iso(ms: int | None) -> str | None:
            return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat()

        return {
            **self.schedule.to_dict(),
            "next_due": iso(self.next_due_ms),
            "last_tick": iso(self.last_due_ms),
            "skipped": self.skipped,
        }
