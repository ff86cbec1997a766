"""Validating and encoding a task for enqueue.lua, and the RedisTask that enqueue returns."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import codec
from .errors import InvalidTaskError, QueueError, SerializationError
from .keys import validate_task_id, validate_task_type
from .models import RedisTask, TaskPriority, TaskState, coerce_priority

__all__ = ["TaskSpec", "build_spec", "check_seconds", "enqueued_task"]


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """A validated task and its enqueue.lua arguments."""

    task_id: str
    task_type: str
    payload: dict[str, Any]
    priority: int
    max_retries: int
    delay_ms: int
    timeout: float | None
    meta: dict[str, str]
    args: list[Any]


def build_spec(
    default_max_retries: int,
    max_payload_bytes: int,
    task_id: str,
    task_type: str,
    payload: Mapping[str, Any],
    priority: int | TaskPriority | str = TaskPriority.NORMAL,
    delay: float | None = None,
    max_retries: int | None = None,
    meta: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> TaskSpec:
    """Check every argument of enqueue(); raises before anything reaches Redis."""
    validate_task_id(task_id)
    validate_task_type(task_type)
    prio = coerce_priority(priority)
    if not isinstance(payload, Mapping):
        raise SerializationError(
            f"payload must be a JSON object (a dict), not {type(payload).__name__}"
        )
    payload_dict = dict(payload)
    text = codec.dumps(payload_dict, "payload", max_payload_bytes)
    retries = default_max_retries if max_retries is None else max_retries
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise InvalidTaskError(f"max_retries must be an int >= 0, not {retries!r}")
    # Stored only when given: otherwise the queue's max_retries applies when it fails.
    stored_retries = "-" if max_retries is None else retries
    if delay is not None:
        check_seconds("delay", delay)
    delay_ms = int((delay or 0) * 1000)
    if timeout is not None and check_seconds("timeout", timeout) == 0:
        raise InvalidTaskError("timeout must be > 0 seconds")
    timeout_ms = int((timeout or 0) * 1000)
    meta_dict = dict(meta or {})
    meta_text = codec.dumps(meta_dict, "meta") if meta_dict else ""
    header = f"{task_id} {task_type} {prio} {stored_retries} {delay_ms} {timeout_ms}"
    args = [header, meta_text, text]
    return TaskSpec(
        task_id, task_type, payload_dict, prio, retries, delay_ms, timeout, meta_dict, args
    )


def check_seconds(name: str, value: object) -> float:
    """A finite, non-negative number of seconds, or InvalidTaskError."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
    ):
        raise InvalidTaskError(f"{name} must be a finite number of seconds >= 0, not {value!r}")
    return float(value)


def enqueued_task(spec: TaskSpec, reply: Any, now_ms: int, default_max_retries: int) -> RedisTask:
    """The task enqueue.lua created, or the existing one when the id was taken."""
    if isinstance(reply, list):
        try:
            return codec.decode_task(spec.task_id, codec.text_fields(reply), default_max_retries)
        except ValueError as exc:
            raise QueueError(f"task id {spec.task_id!r} exists but {exc}") from exc
    return RedisTask(
        task_id=spec.task_id,
        task_type=spec.task_type,
        payload=spec.payload,
        priority=spec.priority,
        state=TaskState.DELAYED if spec.delay_ms else TaskState.PENDING,
        max_retries=spec.max_retries,
        created_at=codec.iso_from_ms(str(now_ms)) or "",
        timeout=spec.timeout,
        meta=spec.meta,
    )
