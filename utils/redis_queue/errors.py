"""The queue's exception tree, and the one place where script error codes become exceptions.

QueueError
├── InvalidTaskError (also ValueError)      bad input, rejected before Redis is touched
│   ├── InvalidTaskId
│   ├── InvalidQueueName
│   ├── InvalidPriority
│   └── PayloadTooLarge
├── SerializationError (also TypeError)     payload or result is not JSON
├── TaskNotFound (also LookupError)
├── TaskStateError                          the task is not in a state that allows this
│   ├── TaskNotProcessing
│   └── LeaseLost                           fencing: the caller's lease expired or moved on
├── TaskFailed                              wait_for_result: dead-lettered or failed
├── TaskCancelled                           wait_for_result: cancelled
├── ResultTimeout (also TimeoutError)       wait_for_result: no final state in time
├── CorruptQueue                            a queue key holds the wrong Redis type
├── NotConnected                            a method was called before connect()
└── RedisUnavailable (also ConnectionError) Redis could not be reached; names the URL
"""

from __future__ import annotations

from typing import Any, NoReturn

__all__ = [
    "BulkEnqueueError",
    "CorruptQueue",
    "InvalidPriority",
    "InvalidQueueName",
    "InvalidTaskError",
    "InvalidTaskId",
    "LeaseLost",
    "NotConnected",
    "PayloadTooLarge",
    "QueueError",
    "RedisUnavailable",
    "ResultTimeout",
    "SerializationError",
    "TaskCancelled",
    "TaskFailed",
    "TaskNotFound",
    "TaskNotProcessing",
    "TaskStateError",
]


class QueueError(Exception):
    """Root of every error the queue raises."""


class InvalidTaskError(QueueError, ValueError):
    """Input that can never be valid; nothing was written to Redis."""


class InvalidTaskId(InvalidTaskError):
    pass


class InvalidQueueName(InvalidTaskError):
    pass


class InvalidPriority(InvalidTaskError):
    pass


class PayloadTooLarge(InvalidTaskError):
    pass


class SerializationError(QueueError, TypeError):
    """A payload or result that JSON cannot represent."""


class TaskNotFound(QueueError, LookupError):
    def __init__(self, task_id: str) -> None:
        super().__init__(f"no task with id {task_id!r}")
        self.task_id = task_id


class TaskStateError(QueueError):
    def __init__(self, task_id: str, state: str, message: str) -> None:
        super().__init__(message)
        self.task_id = task_id
        self.state = state


class TaskNotProcessing(TaskStateError):
    pass


class LeaseLost(TaskStateError):
    """The caller's lease on the task expired and was reclaimed (or granted to another
    worker); its completion, failure or heartbeat was rejected and changed nothing."""


class TaskFailed(QueueError):
    def __init__(self, task_id: str, state: str, error: str | None) -> None:
        super().__init__(f"task {task_id!r} ended {state}: {error}")
        self.task_id = task_id
        self.state = state
        self.error = error


class TaskCancelled(QueueError):
    def __init__(self, task_id: str) -> None:
        super().__init__(f"task {task_id!r} was cancelled")
        self.task_id = task_id


class ResultTimeout(QueueError, TimeoutError):
    pass


class BulkEnqueueError(QueueError):
    """A chunk of enqueue_many failed after earlier chunks were enqueued."""

    def __init__(self, enqueued: list[Any], cause: QueueError) -> None:
        super().__init__(f"enqueue_many stopped after {len(enqueued)} tasks: {cause}")
        self.enqueued = enqueued  # the RedisTasks that are in the queue
        self.cause = cause


class CorruptQueue(QueueError):
    """A key of the queue holds the wrong Redis type (written by something else)."""


class NotConnected(QueueError):
    pass


class RedisUnavailable(QueueError, ConnectionError):
    def __init__(self, url: str, cause: BaseException) -> None:
        super().__init__(f"Redis at {url} is unreachable: {cause}")
        self.url = url


# Codes returned as the first element of a script's reply (see lua/include/common.lua).
E_NOT_FOUND = -1
E_NOT_PROCESSING = -2
E_LEASE_LOST = -3
E_BAD_STATE = -4
E_WRONGTYPE = -10
E_BAD_ARGUMENT = -11


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def raise_for_code(reply: list[Any], task_id: str, action: str) -> NoReturn:
    """Turn a script's error reply into the matching exception."""
    code = int(reply[0])
    detail = [_text(v) for v in reply[1:]]
    state = detail[0] if detail else ""
    if code == E_NOT_FOUND:
        raise TaskNotFound(task_id)
    if code == E_NOT_PROCESSING:
        raise TaskNotProcessing(
            task_id,
            state,
            f"cannot {action} task {task_id!r}: it is {state or 'gone'}, not processing",
        )
    if code == E_LEASE_LOST:
        raise LeaseLost(
            task_id,
            state,
            f"cannot {action} task {task_id!r}: its lease was lost "
            f"(state {state or 'unknown'}, current lease {detail[1] if len(detail) > 1 else '-'})",
        )
    if code == E_BAD_STATE:
        raise TaskStateError(task_id, state, f"cannot {action} task {task_id!r} in state {state!r}")
    if code == E_WRONGTYPE:
        raise CorruptQueue(f"key {detail[0]!r} holds a {detail[1]}, not what the queue expects")
    if code == E_BAD_ARGUMENT:
        raise QueueError(f"{action} refused a malformed argument {detail[0]}={detail[1]!r}")
    raise QueueError(f"unexpected reply {reply!r} to {action} of {task_id!r}")
