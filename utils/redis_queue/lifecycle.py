"""Task lifecycle events: what one entry of a partition's events stream is (`TaskEvent`)
and where a reader starts (`since_position`).

The transition scripts write them (lua/include/common.lua task_event), one XADD per task
event into the stream of the task's partition, bounded by MAXLEN ~ (events_max_len) and
written only while events are on; queue.events() reads them (queue/events.py).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = ["EVENT_NAMES", "TaskEvent", "since_position"]

# Every event the scripts write, in the order a task usually meets them.
EVENT_NAMES = (
    "enqueued",  # enqueue.lua (a debounced task replaced by a new call too)
    "promoted",  # claim.lua: a delayed task (or delayed retry) became ready
    "started",  # claim.lua: a lease was granted; `attempt` counts it
    "released",  # release.lua, a back-off: handed back without counting the attempt
    "retried",  # a failed attempt or an expired lease that will run again; retry_dlq.lua
    "completed",
    "failed",  # final, the DLQ being off
    "dead_lettered",
    "cancelled",
    "deleted",  # delete.lua, purge.lua, purge_dlq.lua (not the expiry of finished tasks)
)

_STREAM_ID = re.compile(r"\d+(-\d+)?")
_MAX_SEQ = 18446744073709551615  # a stream id's sequence part is a 64-bit unsigned


@dataclass(frozen=True, slots=True)
class TaskEvent:
    """One task event. `entry_id` is its stream id ("<server ms>-<seq>"), unique and
    ordered within its `partition`; `attempt` the runs started when it was written;
    `error` the first line (at most 200 bytes) of the error of a retried, failed or
    dead_lettered event."""

    entry_id: str
    partition: int
    event: str
    task_id: str
    task_type: str
    attempt: int
    error: str | None = None

    @property
    def at_ms(self) -> int:
        return int(self.entry_id.split("-", 1)[0])

    @property
    def sort_key(self) -> tuple[int, int, int]:
        ms, _, seq = self.entry_id.partition("-")
        return int(ms), int(seq or 0), self.partition

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["at"] = datetime.fromtimestamp(self.at_ms / 1000, UTC).isoformat()
        return out

    @classmethod
    def from_fields(cls, entry_id: str, partition: int, fields: dict[str, str]) -> TaskEvent:
        return cls(
            entry_id=entry_id,
            partition=partition,
            event=fields.get("event", ""),
            task_id=fields.get("id", ""),
            task_type=fields.get("type", ""),
            attempt=int(fields.get("attempt") or 0),
            error=fields.get("error"),
        )


def since_position(since: str | float | datetime) -> str:
    """The XREAD position (exclusive) that starts a reader at `since`: "$" (what is
    written from now on; resolved per stream by the reader), "0" or "-" (the oldest kept),
    a stream id "<ms>-<seq>" (after it), or a time: a datetime, an ISO 8601 text or
    seconds since the epoch (events written at or after it). ValueError otherwise."""
    if isinstance(since, datetime):
        ms = int(since.timestamp() * 1000)
    elif isinstance(since, int | float):
        ms = int(since * 1000)
    elif since == "$":
        return "$"
    elif since in ("0", "-", "0-0"):
        return "0-0"
    elif _STREAM_ID.fullmatch(since) and "-" in since:
        return since
    else:
        try:
            ms = int(datetime.fromisoformat(since).timestamp() * 1000)
        except ValueError:
            try:
                ms = int(float(since) * 1000)
            except ValueError:
                raise ValueError(
                    f"since {since!r}: use '$', '0', a stream id <ms>-<seq>, an ISO 8601 time "
                    "or seconds since the epoch"
                ) from None
    if ms <= 0:
        return "0-0"
    return f"{ms - 1}-{_MAX_SEQ}"  # the last id before <ms>-0
