"""What a listing returns: a task's summary, a page of them, a search's result, and
the paging cursor. Each has to_dict(), the one JSON shape of the CLI's --json and the
dashboard's API."""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import asdict, dataclass
from typing import Any

from . import codec
from .errors import InvalidTaskId
from .keys import validate_task_id
from .models import TaskState
from .walk import Entry

__all__ = [
    "SUMMARY_FIELDS",
    "SearchResult",
    "TaskPage",
    "TaskSummary",
    "decode_cursor",
    "encode_cursor",
    "summary_from",
]

# The task hash fields a summary reads (never the payload or the result): the error's
# first two 64-byte chunks hold its first line up to ERROR_LINE characters.
SUMMARY_FIELDS = (
    "type", "prio", "state", "attempts", "retries", "created", "started", "completed",
    "worker", "error", "error.1",
)  # fmt: skip
ERROR_LINE = 120
_CHUNK = 64  # a blob's chunk size (lua/include/common.lua's CHUNK)
MAX_CURSOR_CHARS = 1000


@dataclass(frozen=True, slots=True)
class TaskSummary:
    """A task as a listing shows it; `at` is the time its list is ordered by (due time,
    lease deadline, finish or dead-letter time; None for pending tasks, ordered by
    priority and arrival)."""

    task_id: str
    task_type: str
    priority: int
    state: str
    attempts: int
    retry_count: int
    created_at: str | None
    started_at: str | None
    completed_at: str | None
    worker_id: str | None
    error_line: str | None
    at: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class TaskPage:
    """One page of a listing. `total`: how many tasks the state holds (of `task_type`
    for pending); None when a type filter had to scan. `next_cursor`: pass it back for
    the next page; None at the end."""

    tasks: list[TaskSummary]
    total: int | None
    next_cursor: str | None
    state: str
    task_type: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "tasks": [t.to_dict() for t in self.tasks],
            "total": self.total,
            "next_cursor": self.next_cursor,
            "state": self.state,
            "task_type": self.task_type,
        }


@dataclass(frozen=True, slots=True)
class SearchResult:
    """Tasks whose id, payload, result or error contain `text`; `scanned`: task records
    read; `complete`: every task in scope was read (False: stopped at a limit)."""

    tasks: list[TaskSummary]
    scanned: int
    complete: bool
    text: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "tasks": [t.to_dict() for t in self.tasks],
            "scanned": self.scanned,
            "complete": self.complete,
            "text": self.text,
        }


def summary_from(
    task_id: str, fields: dict[str, str], state: TaskState, at_ms: float | None
) -> TaskSummary | None:
    """A summary from a task's hash fields (all of them, or SUMMARY_FIELDS); None when
    the record is gone. A field that does not parse reads as absent rather than hiding
    the task from its listing."""
    task_type = fields.get("type")
    if task_type is None:
        return None
    return TaskSummary(
        task_id=task_id,
        task_type=task_type,
        priority=_int(fields.get("prio")),
        state=fields.get("state") or str(state),
        attempts=_int(fields.get("attempts")),
        retry_count=_int(fields.get("retries")),
        created_at=_iso(fields.get("created")),
        started_at=_iso(fields.get("started")),
        completed_at=_iso(fields.get("completed")),
        worker_id=fields.get("worker") or None,
        error_line=_error_line(fields.get("error"), fields.get("error.1")),
        at=None if at_ms is None else _iso(str(int(at_ms))),
    )


def _error_line(first: str | None, second: str | None) -> str | None:
    if not first:
        return None
    text = first + (second or "")
    line = text.split("\n", 1)[0].rstrip("\r")
    cut = len(line) > ERROR_LINE or (line == text and len(second or "") >= _CHUNK)
    return line[: ERROR_LINE - 3] + "..." if cut else line


def _int(value: str | None) -> int:
    try:
        return int(value) if value else 0
    except ValueError:
        return 0


def _iso(value: str | None) -> str | None:
    try:
        return codec.iso_from_ms(value)
    except (ValueError, OverflowError, OSError):
        return None


# -- the cursor: base64url of the JSON [state, score, task id] of the last entry returned


def encode_cursor(state: TaskState, entry: Entry) -> str:
    score, member = entry
    text = json.dumps([str(state), score, member.decode()], separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: object, state: TaskState) -> Entry:
    """The entry a cursor names; ValueError unless it is one of `state`'s cursors."""
    if not isinstance(cursor, str) or not 0 < len(cursor) <= MAX_CURSOR_CHARS:
        raise ValueError(f"invalid cursor {_shown(cursor)}: pass a next_cursor a listing returned")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        listed_state, score, task_id = json.loads(raw)
        if isinstance(score, bool) or not isinstance(score, int | float):
            raise TypeError("score")
        validate_task_id(task_id)
    except (binascii.Error, ValueError, TypeError, InvalidTaskId, UnicodeDecodeError):
        raise ValueError(
            f"invalid cursor {_shown(cursor)}: pass a next_cursor a listing returned"
        ) from None
    if not math.isfinite(score):
        raise ValueError(f"invalid cursor {_shown(cursor)}: its position is not a number")
    if listed_state != str(state):
        raise ValueError(
            f"the cursor belongs to a listing of {listed_state!r} tasks, not {str(state)!r}"
        )
    return float(score), task_id.encode()


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
