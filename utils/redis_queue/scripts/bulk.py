"""Builders and replies of the scripts that delete or cancel tasks in bulk (declared in
contract.py with the others): delete, purge, cancel_type."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..codec import as_text
from ..keys import QueueKeys
from ..models import TaskState
from .contract import CANCEL_TYPE, DELETE, PURGE, ScriptCall

__all__ = [
    "CancelTypeReply",
    "cancel_type",
    "cancel_type_reply",
    "delete",
    "delete_reply",
    "purge",
    "purge_reply",
]


def delete(keys: QueueKeys, *, task_id: str, force: bool, events: int) -> ScriptCall:
    """`events`: the events stream's MAXLEN (0 = off), here and in purge, cancel_type."""
    named = {"base": keys.base, "id": task_id, "force": "1" if force else "0", "events": events}
    return DELETE.call(keys, named)


def delete_reply(reply: list[Any]) -> TaskState:
    """delete's {1, state}: the state the task was in."""
    return TaskState(as_text(reply[1]))


def purge(keys: QueueKeys, *, state: TaskState, limit: int, events: int) -> ScriptCall:
    named = {"base": keys.base, "state": state.value, "limit": limit, "events": events}
    return PURGE.call(keys, named)


def purge_reply(reply: list[Any]) -> tuple[int, int]:
    """purge's {deleted, taken}."""
    return int(reply[0]), int(reply[1])


def cancel_type(
    keys: QueueKeys, *, task_type: str, delayed: bool, after: str, limit: int, events: int
) -> ScriptCall:
    named = {
        "base": keys.base,
        "type": task_type,
        "where": "delayed" if delayed else "pending",
        "after": after,
        "limit": limit,
        "events": events,
    }
    return CANCEL_TYPE.call(keys, named)


@dataclass(frozen=True, slots=True)
class CancelTypeReply:
    cancelled: int
    examined: int
    after: str  # where the next delayed call resumes ('^' the start); '' = done


def cancel_type_reply(reply: list[Any]) -> CancelTypeReply:
    return CancelTypeReply(int(reply[0]), int(reply[1]), as_text(reply[2]))
