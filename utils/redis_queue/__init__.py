"""The queue engine: a priority task queue in Redis with leases, fencing, retries and a DLQ,
and the Worker that serves handlers from it.

from utils.redis_queue import RedisTaskQueue, TaskPriority, TaskState, RedisTask
from utils.redis_queue import Worker, HandlerRegistry, TaskContext, Retry, PermanentFailure
"""

from .blobs import BlobStore, DirectoryBlobStore
from .errors import (
    BulkEnqueueError,
    CorruptQueue,
    DuplicateTask,
    DurabilityError,
    InvalidLimit,
    InvalidPriority,
    InvalidQueueName,
    InvalidRedisUrl,
    InvalidSchedule,
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
    WorkerIdInUse,
)
from .handlers import HandlerRegistry, PermanentFailure, RateLimited, Retry, TaskContext
from .lifecycle import TaskEvent
from .limits import Limit, LimitStatus
from .models import (
    AttemptRecord,
    ClaimBatch,
    MinuteCounts,
    RedisTask,
    RetryPolicy,
    Settlement,
    TaskPriority,
    TaskState,
)
from .output import OutputChunk
from .queue import RedisTaskQueue
from .schedules import Schedule, ScheduleInfo
from .summaries import SearchResult, TaskPage, TaskSummary
from .sync_queue import SyncRedisTaskQueue
from .worker import Worker, WorkerStats

__all__ = [
    "AttemptRecord",
    "BlobStore",
    "BulkEnqueueError",
    "ClaimBatch",
    "CorruptQueue",
    "DirectoryBlobStore",
    "DuplicateTask",
    "DurabilityError",
    "HandlerRegistry",
    "InvalidLimit",
    "InvalidPriority",
    "InvalidQueueName",
    "InvalidRedisUrl",
    "InvalidSchedule",
    "InvalidTaskError",
    "InvalidTaskId",
    "InvalidTaskType",
    "LeaseLost",
    "Limit",
    "LimitStatus",
    "MinuteCounts",
    "NotConnected",
    "OutputChunk",
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
    "Schedule",
    "ScheduleInfo",
    "SearchResult",
    "SerializationError",
    "Settlement",
    "SyncRedisTaskQueue",
    "TaskCancelled",
    "TaskContext",
    "TaskEvent",
    "TaskFailed",
    "TaskNotFound",
    "TaskNotProcessing",
    "TaskPage",
    "TaskPriority",
    "TaskState",
    "TaskStateError",
    "TaskSummary",
    "TopologyError",
    "Worker",
    "WorkerIdInUse",
    "WorkerStats",
]
