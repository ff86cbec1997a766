"""Builders of the pause and periodic-schedule scripts (declared in contract.py with the
others): named arguments in, one ScriptCall out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..codec import as_text
from ..keys import QueueKeys
from .contract import (
    PAUSE,
    RESUME,
    SCHEDULE_ADVANCE,
    SCHEDULE_SET,
    SCHEDULES_DUE,
    UNSCHEDULE,
    ScriptCall,
)

__all__ = [
    "DueSchedules",
    "pause",
    "resume",
    "schedule_advance",
    "schedule_set",
    "schedules_due",
    "schedules_due_reply",
    "unschedule",
]


def pause(keys: QueueKeys, *, target: str) -> ScriptCall:
    return PAUSE.call(keys, {"target": target})


def resume(keys: QueueKeys, *, target: str) -> ScriptCall:
    return RESUME.call(keys, {"base": keys.base, "target": target})


def schedule_set(keys: QueueKeys, *, name: str, definition: str, first_due_ms: int) -> ScriptCall:
    named = {"name": name, "definition": definition, "first_due": first_due_ms}
    return SCHEDULE_SET.call(keys, named)


def unschedule(keys: QueueKeys, *, name: str) -> ScriptCall:
    return UNSCHEDULE.call(keys, {"name": name})


def schedules_due(keys: QueueKeys, *, limit: int) -> ScriptCall:
    return SCHEDULES_DUE.call(keys, {"limit": limit})


def schedule_advance(
    keys: QueueKeys,
    *,
    name: str,
    expected_ms: int,
    next_due_ms: int,
    last_due_ms: int,
    skipped: int,
) -> ScriptCall:
    named = {
        "name": name,
        "expected": expected_ms,
        "next_due": next_due_ms,
        "last_due": last_due_ms,
        "skipped": skipped,
    }
    return SCHEDULE_ADVANCE.call(keys, named)


@dataclass(frozen=True, slots=True)
class DueSchedules:
    """schedules_due.lua's reply: server time, the earliest due time (None: no schedule)
    and each due schedule as (name, due ms, definition JSON)."""

    now_ms: int
    next_due_ms: int | None
    due: list[tuple[str, int, str]]


def schedules_due_reply(reply: Any) -> DueSchedules:
    rows = [
        (as_text(reply[i]), int(reply[i + 1]), as_text(reply[i + 2]))
        for i in range(2, len(reply), 3)
    ]
    next_due = int(reply[1])
    return DueSchedules(int(reply[0]), None if next_due < 0 else next_due, rows)
