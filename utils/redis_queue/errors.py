"""The queue's exception tree (scripts.raise_for_code maps script error codes onto it).

QueueError
├── InvalidTaskError (also ValueError)      bad input, rejected before Redis is touched
│   ├── InvalidTaskId
│   ├── InvalidTaskType
│   ├── InvalidQueueName
│   ├── InvalidPriority
│   ├── InvalidSchedule                     a schedule's name, cron, interval or zone
│   └── PayloadTooLarge
├── SerializationError (also TypeError)     payload or result is not JSON
├── TaskNotFound (also LookupError)
├── DuplicateTask                           unique_for: an equal task ran in the window and
│                                           its record is gone (nothing was enqueued)
├── TaskStateError                          the task is not in a state that allows this
│   ├── TaskNotProcessing
│   └── LeaseLost                           fencing: the caller's lease expired or moved on
├── TaskFailed                              wait_for_result: dead-lettered or failed
├── TaskCancelled                           wait_for_result: cancelled
├── ResultTimeout (also TimeoutError)       wait_for_result: no final state in time
├── CorruptQueue                            a queue key holds the wrong Redis type
├── NotConnected                            a method was called before connect()
├── InvalidRedisUrl (also ValueError)       a Redis URL that cannot be used (scheme, port, ...)
├── RedisAuthError                          Redis refused the credentials, or an ACL the command
├── TopologyError                           the server cannot serve the queue as configured
│                                           (a replica, cluster vs not, a wrong master name,
│                                           a partition count that differs from the queue's)
├── DurabilityError                         WAIT confirmed a write on fewer replicas than asked
├── WorkerIdInUse                           a live worker already holds this worker id
└── RedisUnavailable (also ConnectionError) Redis could not be reached; names the URL
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BulkEnqueueError",
    "CorruptQueue",
    "DuplicateTask",
    "DurabilityError",
    "InvalidLimit",
    "InvalidPriority",
    "InvalidQueueName",
    "InvalidRedisUrl",
    "InvalidSchedule",
    "InvalidTaskError",
    "InvalidTaskId",
    "InvalidTaskType",
    "LeaseLost",
    "NotConnected",
    "PayloadTooLarge",
    "QueueError",
    "RedisAuthError",
    "RedisUnavailable",
    "ResultTimeout",
    "SerializationError",
    "TaskCancelled",
    "TaskFailed",
    "TaskNotFound",
    "TaskNotProcessing",
    "TaskStateError",
    "TopologyError",
    "WorkerIdInUse",
]


class QueueError(Exception):
    """Root of every error the queue raises."""


class InvalidTaskError(QueueError, ValueError):
    """Input that can never be valid; nothing was written to Redis."""


class InvalidTaskId(InvalidTaskError):
    pass


class InvalidTaskType(InvalidTaskError):
    pass


class InvalidQueueName(InvalidTaskError):
    pass


class InvalidLimit(InvalidTaskError):
    """A limit key, a limit's numbers or a task's limits/cost_tokens that cannot be valid."""


class InvalidPriority(InvalidTaskError):
    pass


class InvalidSchedule(InvalidTaskError):
    """A periodic schedule that cannot be valid (name, cron, interval, time zone)."""


class PayloadTooLarge(InvalidTaskError):
    pass


class SerializationError(QueueError, TypeError):
    """A payload or result that JSON cannot represent."""


class TaskNotFound(QueueError, LookupError):
    def __init__(self, task_id: str) -> None:
        super().__init__(f"no task with id {task_id!r}")
        self.task_id = task_id


class DuplicateTask(QueueError):
    """An enqueue with unique_for found its window taken by `task_id`, whose record is
    gone (finished and cleared); nothing was enqueued. The window ends on its own."""

    def __init__(self, task_id: str, task_type: str) -> None:
        super().__init__(
            f"an equal {task_type!r} task ({task_id!r}) was enqueued within its unique_for "
            "window and has been cleared since; nothing was enqueued"
        )
        self.task_id = task_id
        self.task_type = task_type


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
    """`attempts`: how many times the task ran (every run counts, the last one too)."""

    def __init__(self, task_id: str, state: str, error: str | None, attempts: int = 0) -> None:
        super().__init__(f"task {task_id!r} ended {state}: {error}")
        self.task_id = task_id
        self.state = state
        self.error = error
        self.attempts = attempts


class TaskCancelled(QueueError):
    def __init__(self, task_id: str, attempts: int = 0) -> None:
        super().__init__(f"task {task_id!r} was cancelled")
        self.task_id = task_id
        self.attempts = attempts


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


class ServedTypesUnknown(QueueError):
    """A claim named its long list of task types by digest and Redis no longer holds the
    list (it expired, or the server restarted empty): the claim is sent again with it."""


class NotConnected(QueueError):
    pass


class InvalidRedisUrl(QueueError, ValueError):
    """A Redis URL that cannot be used; nothing was tried."""


class RedisAuthError(QueueError):
    """Redis answered but refused the credentials (AUTH) or the command (an ACL)."""

    def __init__(self, url: str, message: str) -> None:
        super().__init__(f"Redis at {url} {message}")
        self.url = url


class RedisUnavailable(QueueError, ConnectionError):
    def __init__(self, url: str, cause: BaseException) -> None:
        super().__init__(f"Redis at {url} is unreachable: {cause}")
        self.url = url


class TopologyError(QueueError):
    """The server or the queue's stored layout does not match the configuration (a
    read-only replica, a cluster node without cluster=True, an unknown Sentinel master, a
    different partition count); nothing was written."""


class DurabilityError(QueueError):
    """WAIT confirmed the write on fewer replicas than asked within the timeout. The write
    happened on the primary: the tasks exist there and may survive (they are lost only if
    the primary fails before its replicas catch up). Enqueueing them again with the same
    ids is safe (idempotent) and waits again."""

    def __init__(self, task_ids: list[str], acked: int, wanted: int, timeout_ms: int) -> None:
        shown = ", ".join(repr(t) for t in task_ids[:3]) + (" ..." if len(task_ids) > 3 else "")
        super().__init__(
            f"write of {len(task_ids)} task(s) ({shown}) reached {acked} of {wanted} "
            f"replica(s) within {timeout_ms} ms; the tasks are on the primary and may be "
            "lost if it fails now (enqueue them again to wait again)"
        )
        self.task_ids = task_ids
        self.acked = acked
        self.wanted = wanted


class WorkerIdInUse(QueueError):
    """A live worker (beating, and not a dead process of this host) holds this worker id:
    two workers under one id would overwrite each other's registry entry, and the first
    to stop would remove the entry of the other."""

    def __init__(self, worker_id: str, host: str, pid: int) -> None:
        super().__init__(
            f"worker id {worker_id!r} is in use by a live worker (host {host}, pid {pid}); "
            "choose another --worker-id"
        )
        self.worker_id, self.host, self.pid = worker_id, host, pid
