"""The queue engine: a priority task queue in Redis with leases, fencing, retries and a DLQ.

from utils.redis_queue import RedisTaskQueue, TaskPriority, TaskState, RedisTask
"""

from .errors import (
    BulkEnqueueError,
    CorruptQueue,
    InvalidPriority,
    InvalidQueueName,
    InvalidTaskError,
    InvalidTaskId,
    LeaseLost,
    NotConnected,
    PayloadTooLarge,
    QueueError,
    RedisUnavailable,
    ResultTimeout,
    SerializationError,
    TaskCancelled,
    TaskFailed,
    TaskNotFound,
    TaskNotProcessing,
    TaskStateError,
)
from .models import ClaimBatch, RedisTask, RetryPolicy, Settlement, TaskPriority, TaskState
from .queue import RedisTaskQueue

__all__ = [
    "BulkEnqueueError",
    "ClaimBatch",
    "CorruptQueue",
    "InvalidPriority",
    "InvalidQueueName",
    "InvalidTaskError",
    "InvalidTaskId",
    "LeaseLost",
    "NotConnected",
    "PayloadTooLarge",
    "QueueError",
    "RedisTask",
    "RedisTaskQueue",
    "RedisUnavailable",
    "ResultTimeout",
    "RetryPolicy",
    "SerializationError",
    "Settlement",
    "TaskCancelled",
    "TaskFailed",
    "TaskNotFound",
    "TaskNotProcessing",
    "TaskPriority",
    "TaskState",
    "TaskStateError",
]
