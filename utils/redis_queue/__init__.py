"""The queue engine: a priority task queue in Redis with leases, fencing, retries and a DLQ,
and the Worker that serves handlers from it.

from utils.redis_queue import RedisTaskQueue, TaskPriority, TaskState, RedisTask
from utils.redis_queue import Worker, HandlerRegistry, TaskContext, Retry, PermanentFailure
"""

from .errors import (
    BulkEnqueueError,
    CorruptQueue,
    DurabilityError,
    InvalidLimit,
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
from .handlers import HandlerRegistry, PermanentFailure, RateLimited, Retry, TaskContext
from .limits import Limit, LimitStatus
from .models import ClaimBatch, RedisTask, RetryPolicy, Settlement, TaskPriority, TaskState
from .queue import RedisTaskQueue
from .worker import Worker, WorkerStats

__all__ = [
    "BulkEnqueueError",
    "ClaimBatch",
    "CorruptQueue",
    "DurabilityError",
    "HandlerRegistry",
    "InvalidLimit",
    "InvalidPriority",
    "InvalidQueueName",
    "InvalidRedisUrl",
    "InvalidTaskError",
    "InvalidTaskId",
    "InvalidTaskType",
    "LeaseLost",
    "Limit",
    "LimitStatus",
    "NotConnected",
    "PayloadTooLarge",
    "PermanentFailure",
    "QueueError",
    "RateLimited",
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
