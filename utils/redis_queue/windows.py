"""Dedup and debounce windows of an enqueue: unique_for, unique_key and debounce checked,
the task's unique key hashed, and on a partitioned queue the task's id steered into the
partition of that hash, so the window key and the task share one slot and one script.

Two tasks are equal when they have the same type and unique key (unique_key, or by
default the payload: its JSON with sorted keys). The window keys are
`unique:<type>:<digest>` and `debounce:<type>:<digest>` (keys.py), digest = the first 128
bits of the key's SHA-256 in hex.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from typing import Any

from .errors import InvalidTaskError
from .keys import QueueLayout, validate_task_id
from .new_task import NewTask, check_seconds

__all__ = ["MAX_UNIQUE_KEY", "WINDOW_ARGS", "digest_of", "steered_id", "with_windows"]

MAX_UNIQUE_KEY = 1024  # characters of a unique_key: it is hashed, never stored
WINDOW_ARGS = ("unique_for", "unique_key", "debounce")


def digest_of(task_type: str, payload: dict[str, Any], unique_key: str | None) -> str:
    """The hash naming a task's windows: of its unique_key, or of its payload."""
    if unique_key is None:
        text = "p:" + json.dumps(payload, sort_keys=True, separators=(",", ":"))
    else:
        text = "k:" + unique_key
    return hashlib.sha256(f"{task_type}\n{text}".encode()).hexdigest()[:32]


def steered_id(task_id: str, anchor: str, layout: QueueLayout) -> str:
    """`task_id`, or `<task_id>@<n>` with the smallest n that puts it in the partition of
    `anchor` (a queue of one partition: always `task_id`)."""
    if layout.count == 1:
        return task_id
    target = layout.index_of(anchor)
    candidate, n = task_id, 0
    while layout.index_of(candidate) != target:
        n += 1
        candidate = f"{task_id}@{n}"
    return validate_task_id(candidate)


def with_windows(
    task: NewTask,
    layout: QueueLayout,
    *,
    unique_for: float | None = None,
    unique_key: str | None = None,
    debounce: float | None = None,
) -> NewTask:
    """`task` with its windows set, or itself when it has none; InvalidTaskError for a
    bad combination or value."""
    if unique_for is None and debounce is None:
        if unique_key is not None:
            raise InvalidTaskError("unique_key needs unique_for or debounce")
        return task
    if unique_for is not None and debounce is not None:
        raise InvalidTaskError("give unique_for or debounce, not both")
    if unique_key is not None and (
        not isinstance(unique_key, str) or not 0 < len(unique_key) <= MAX_UNIQUE_KEY
    ):
        raise InvalidTaskError(
            f"unique_key must be a string of 1 to {MAX_UNIQUE_KEY} characters, not {unique_key!r}"
        )
    digest = digest_of(task.task_type, task.payload, unique_key)
    task_id = steered_id(task.task_id, f"{task.task_type}:{digest}", layout)
    if debounce is not None:
        if task.delay_ms:
            raise InvalidTaskError("debounce holds the task for its window: do not give a delay")
        window_ms = _window_ms("debounce", debounce)
        return dataclasses.replace(
            task, task_id=task_id, delay_ms=window_ms, debounce=True, digest=digest
        )
    window_ms = _window_ms("unique_for", unique_for)
    return dataclasses.replace(task, task_id=task_id, unique_ms=window_ms, digest=digest)


def _window_ms(name: str, seconds: object) -> int:
    value = check_seconds(name, seconds)
    if value <= 0:
        raise InvalidTaskError(f"{name} must be > 0 seconds")
    return math.ceil(value * 1000)
