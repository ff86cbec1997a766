"""A new task: every enqueue() argument validated and encoded (NewTask), and the RedisTask
that enqueue returns for it."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import codec
from .errors import (
    DuplicateTask,
    InvalidLimit,
    InvalidTaskError,
    QueueError,
    SerializationError,
)
from .keys import validate_limit_key, validate_task_id, validate_task_type
from .models import RedisTask, TaskPriority, TaskState, coerce_priority

__all__ = ["MAX_SECONDS", "NewTask", "check_seconds", "enqueued_task", "new_task"]


@dataclass(slots=True)
class NewTask:
    """A task that passed validation, with its JSON already encoded (what enqueue.lua
    stores; scripts.enqueue builds its arguments from these fields). Treated as immutable:
    a changed task is a copy (dataclasses.replace). Not frozen, because a frozen
    dataclass's __init__ sets each of its 20 fields through object.__setattr__, which
    tripled the cost of building one (~2 us of a bulk enqueue's ~10 us of Python a task)."""

    task_id: str
    task_type: str
    payload: dict[str, Any]
    priority: int
    max_retries: int  # what applies to it
    stored_max_retries: int | None  # None: not stored, the queue's applies when it fails
    delay_ms: int
    timeout: float | None
    meta: dict[str, str]
    payload_text: str
    meta_text: str  # '' when there is no meta
    limits: tuple[str, ...] = ()
    cost_tokens: int | None = None
    group: str | None = None
    blob: bool = False  # claim-check: the payload goes into a key of its own
    blob_ref: str | None = None  # "<size>:<key>": put in the queue's BlobStore already
    # Dedup and debounce windows (windows.py): the unique_for window in ms (0 = none),
    # whether delay_ms is a debounce window, and the hash of the task's unique key.
    unique_ms: int = 0
    debounce: bool = False
    digest: str = ""

    @property
    def timeout_ms(self) -> int:
        # Rounded up, so a timeout too short to store is never 0 ("none").
        return math.ceil(self.timeout * 1000) if self.timeout else 0

    def with_meta(self, extra: Mapping[str, str]) -> NewTask:
        """This task with `extra` added to its meta; keys the caller set are kept."""
        meta = {**extra, **self.meta}
        return dataclasses.replace(self, meta=meta, meta_text=codec.dumps(meta, "meta"))


def new_task(
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
    limits: Sequence[str] | None = None,
    cost_tokens: int | None = None,
    group: str | None = None,
    *,
    blob_threshold: int | None = None,
) -> NewTask:
    """Check every argument of enqueue(); raises before anything reaches Redis. A payload
    JSON longer than `blob_threshold` bytes (None: never) is stored claim-check."""
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
    if delay is not None:
        check_seconds("delay", delay)
    delay_ms = int((delay or 0) * 1000)
    if timeout is not None and check_seconds("timeout", timeout) == 0:
        raise InvalidTaskError("timeout must be > 0 seconds")
    meta_dict = dict(meta or {})
    meta_text = codec.dumps(meta_dict, "meta") if meta_dict else ""
    return NewTask(
        task_id,
        task_type,
        payload_dict,
        prio,
        retries,
        max_retries,
        delay_ms,
        timeout,
        meta_dict,
        text,
        meta_text,
        check_limit_keys(limits) if limits else (),
        check_cost_tokens(cost_tokens),
        None if group is None else validate_group(group),
        blob_threshold is not None and len(text) > blob_threshold,
    )


MAX_TASK_LIMITS = 16  # limit keys one task may list: each costs its claim a few reads
MAX_COST_TOKENS = 10**12


def check_limit_keys(limits: object) -> tuple[str, ...]:
    """The limit keys a task lists, deduplicated in order, or InvalidLimit."""
    if isinstance(limits, str) or not isinstance(limits, Sequence | set | frozenset):
        raise InvalidLimit(f"limits must be a list of limit keys, not {limits!r}")
    keys = tuple(dict.fromkeys(validate_limit_key(k) for k in limits))
    if len(keys) > MAX_TASK_LIMITS:
        raise InvalidLimit(f"a task may list at most {MAX_TASK_LIMITS} limits, not {len(keys)}")
    return keys


def validate_group(group: object) -> str:
    """A fairness group: the same characters as a limit key ("tenant:acme")."""
    try:
        return validate_limit_key(group)
    except InvalidLimit:
        raise InvalidTaskError(
            f"invalid group {group!r}: use 1-128 characters from A-Z a-z 0-9 _ . - : @ / "
            "starting with a letter or digit"
        ) from None


def check_cost_tokens(cost: object) -> int | None:
    if cost is None:
        return None
    if isinstance(cost, bool) or not isinstance(cost, int) or not 0 <= cost <= MAX_COST_TOKENS:
        raise InvalidLimit(
            f"cost_tokens must be an int from 0 to {MAX_COST_TOKENS:,}, not {cost!r}"
        )
    return cost


MAX_SECONDS = 10 * 365 * 86400  # ten years: any delay or timeout beyond is a mistake


def check_seconds(name: str, value: object) -> float:
    """A number of seconds in [0, MAX_SECONDS], or InvalidTaskError."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0 <= value <= MAX_SECONDS
    ):
        raise InvalidTaskError(
            f"{name} must be a number of seconds from 0 to {MAX_SECONDS:,} (ten years), "
            f"not {value!r}"
        )
    return float(value)


def enqueued_task(
    task: NewTask, reply: Any, created_at: str, default_max_retries: int
) -> RedisTask:
    """The task enqueue.lua created (reply 1; `created_at` is its call's time, as
    codec.iso_from_ms gives it), the existing one when the id was taken, or the one a
    window chose ({id, HGETALL}: the unique window's first task, the debounced task)."""
    if not isinstance(reply, list):
        return RedisTask(
            task_id=task.task_id,
            task_type=task.task_type,
            payload=task.payload,
            priority=task.priority,
            state=TaskState.DELAYED if task.delay_ms else TaskState.PENDING,
            max_retries=task.max_retries,
            created_at=created_at,
            timeout=task.timeout,
            meta=task.meta,
            limits=list(task.limits),
            cost_tokens=task.cost_tokens,
            group=task.group,
        )
    if len(reply) == 2 and isinstance(reply[1], list):
        chosen = codec.as_text(reply[0])
        if not reply[1]:  # its record was cleared while the window holds
            raise DuplicateTask(chosen, task.task_type)
        task = dataclasses.replace(task, task_id=chosen)
        reply = reply[1]
    try:
        return codec.decode_task(task.task_id, codec.text_fields(reply), default_max_retries)
    except ValueError as exc:
        raise QueueError(f"task id {task.task_id!r} exists but {exc}") from exc
