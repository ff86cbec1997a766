"""The queue engine: a priority task queue in Redis with leases, fencing, retries and a DLQ,
and the Worker that serves handlers from it.

from utils.redis_queue import RedisTaskQueue, TaskPriority, TaskState, RedisTask
from utils.redis_queue import Worker, HandlerRegistry, TaskContext, Retry, PermanentFailure
"""

from .errors import (
    BulkEnqueueError,
    CorruptQueue,
    DurabilityError,
    InvalidPriority,
    InvalidQueueName,
    InvalidRedisUrl,
    InvalidTaskError,
    InvalidTaskId,
    InvalidTaskType,
    LeaseLost,
    NotConnected,
    PayloadTooLarge,
    QueueError,
    RedisAuthError,
    RedisUnavailable,
    ResultTimeout,
    SerializationError,
    TaskCancelled,
    TaskFailed,
    TaskNotFound,
    TaskNotProcessing,
    TaskStateError,
    TopologyError,
)
from .handlers import HandlerRegistry, PermanentFailure, Retry, TaskContext
from .models import ClaimBatch, RedisTask, RetryPolicy, Settlement, TaskPriority, TaskState
from .queue import RedisTaskQueue
from .worker import Worker, WorkerStats

__all__ = [
    "BulkEnqueueError",
    "ClaimBatch",
    "CorruptQueue",
    "DurabilityError",
    "HandlerRegistry",
    "InvalidPriority",
    "InvalidQueueName",
    "InvalidRedisUrl",
    "InvalidTaskError",
    "InvalidTaskId",
    "InvalidTaskType",
    "LeaseLost",
    "NotConnected",
    "PayloadTooLarge",
    "PermanentFailure",
    "QueueError",
    "RedisAuthError",
    "RedisTask",
    "RedisTaskQueue",
    "RedisUnavailable",
    "ResultTimeout",
    "Retry",
    "RetryPolicy",
    "SerializationError",
    "Settlement",
    "TaskCancelled",
    "TaskContext",
    "TaskFailed",
    "TaskNotFound",
    "TaskNotProcessing",
    "TaskPriority",
    "TaskState",
    "TaskStateError",
    "TopologyError",
    "Worker",
    "WorkerStats",
]
