"""Every Redis key of a queue is built here (and mirrored in lua/include/common.lua).

A queue is one or more partitions. Every key of one partition shares its hash tag, so each
script touches one Cluster slot: ``{<queue>}`` for a queue of one partition (the default),
``{<queue>:<i>}`` (or ``{<queue>:<i>.<salt>}``, see partition_tag) for partition i of a
partitioned one. What is queue-wide (the worker registry, pipeline runs, the stored
partition count) stays under ``{<queue>}``. A task's partition is a pure function of its
id (partition_of), so every client finds it without asking.

Queue names, task ids and task types are validated before they reach a key, so no
user input can add a hash tag, a glob character or a separator of its own.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Literal

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from .errors import InvalidLimit, InvalidQueueName, InvalidTaskId, InvalidTaskType

__all__ = [
    "BLOB_NAMES",
    "HISTORY_TTL_SECONDS",
    "MAX_PARTITIONS",
    "BlobName",
    "QueueKeys",
    "QueueLayout",
    "check_partitions",
    "partition_keys",
    "partition_of",
    "partition_tag",
    "queue_index",
    "validate_limit_key",
    "validate_queue_name",
    "validate_task_id",
    "validate_task_type",
]

MAX_PARTITIONS = 256
# How long a minute's history hash lives (lua/include/common.lua HISTORY_TTL_S): a day of
# charts, whatever the hour they are drawn.
HISTORY_TTL_SECONDS = 25 * 3600

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}")
_TASK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-:@]{0,199}")
_TASK_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
_LIMIT_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-:@/]{0,127}")
_KNOWN_TYPES: set[str] = set()

# The blobs of a task that may live in keys of their own (QueueKeys.blob).
BlobName = Literal["payload", "result"]
BLOB_NAMES: tuple[BlobName, ...] = ("payload", "result")


def validate_queue_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidQueueName(
            f"invalid queue name {name!r}: use 1-100 characters from A-Z a-z 0-9 _ . - "
            "starting with a letter or digit"
        )
    return name


def validate_task_id(task_id: object) -> str:
    if not isinstance(task_id, str) or not _TASK_ID.fullmatch(task_id):
        raise InvalidTaskId(
            f"invalid task id {task_id!r}: use 1-200 characters from A-Z a-z 0-9 _ . - : @ "
            "starting with a letter or digit"
        )
    return task_id


def validate_task_type(task_type: object) -> str:
    if isinstance(task_type, str) and task_type in _KNOWN_TYPES:  # a few types, seen often
        return task_type
    if not isinstance(task_type, str) or not _TASK_TYPE.fullmatch(task_type):
        raise InvalidTaskType(
            f"invalid task type {task_type!r}: use 1-64 characters from A-Z a-z 0-9 _ . - "
            "starting with a letter or digit"
        )
    if len(_KNOWN_TYPES) < 1024:
        _KNOWN_TYPES.add(task_type)
    return task_type


class TaskTypes(tuple[str, ...]):
    """Task types a claim serves, validated, with the digest that names their set in
    Redis (claim.lua's `served:<digest>`, for lists too long to send with every claim)."""

    digest: str


def validate_task_types(task_types: Iterable[object]) -> TaskTypes:
    """A list of task types a claim serves, each validated: a worker sends the same
    (possibly long) list with every claim, so each list is checked and digested once."""
    given = tuple(task_types)
    try:
        return _validated_types(given)
    except TypeError:  # something unhashable in it: the per-item check names it
        return _task_types(given)


@lru_cache(maxsize=32)
def _validated_types(task_types: tuple[object, ...]) -> TaskTypes:
    return _task_types(task_types)


def _task_types(given: tuple[object, ...]) -> TaskTypes:
    types = TaskTypes(validate_task_type(t) for t in given)
    text = "\n".join(sorted(set(types))).encode()
    types.digest = hashlib.blake2b(text, digest_size=12).hexdigest()
    return types


def validate_limit_key(key: object) -> str:
    """A limit key: a task type, or a name such as "openai" or "tenant:acme"."""
    if not isinstance(key, str) or not _LIMIT_KEY.fullmatch(key):
        raise InvalidLimit(
            f"invalid limit key {key!r}: use 1-128 characters from A-Z a-z 0-9 _ . - : @ / "
            "starting with a letter or digit"
        )
    return key


def queue_index(prefix: str) -> str:
    """Set (outside every queue's hash tag): the names of the queues under `prefix`, added
    by each client at connect, so an operator's tools find them without scanning the keyspace."""
    return f"{prefix}:queues"


def check_partitions(partitions: object) -> int:
    if (
        isinstance(partitions, bool)
        or not isinstance(partitions, int)
        or not 1 <= partitions <= MAX_PARTITIONS
    ):
        raise ValueError(
            f"partitions must be a whole number from 1 to {MAX_PARTITIONS}, not {partitions!r}"
        )
    return partitions


def partition_of(task_id: str, partitions: int) -> int:
    """The partition a task id lives in (CRC-32 of the id, modulo the count)."""
    if partitions == 1:
        return 0
    return zlib.crc32(task_id.encode()) % partitions


@cache
def partition_tag(queue: str, index: int, partitions: int) -> str:
    """The hash tag of partition `index`: ``<queue>:<index>``, or ``<queue>:<index>.<salt>``
    with the smallest salt that puts its slot in the middle half of the index-th of
    `partitions` equal slot ranges. A cluster made by `redis-cli --cluster create` splits
    the slots into equal contiguous ranges, so partitions in any multiple of the primary
    count land evenly on them (with plain CRC16 tags, 6 partitions on 3 primaries often put
    3 on one)."""
    if partitions == 1:
        return queue
    width = REDIS_CLUSTER_HASH_SLOTS / partitions
    low = int(index * width + width / 4)
    high = max(low, int(index * width + 3 * width / 4) - 1)
    salt = 0
    while True:
        tag = f"{queue}:{index}" if salt == 0 else f"{queue}:{index}.{salt}"
        if low <= key_slot(tag.encode()) <= high:
            return tag
        salt += 1


def partition_keys(prefix: str, queue: str, partitions: int) -> tuple[QueueKeys, ...]:
    """The keys of each partition, in order (one QueueKeys with tag ``{<queue>}`` when the
    queue has one partition)."""
    return tuple(
        QueueKeys(prefix, queue, partition_tag(queue, i, partitions)) for i in range(partitions)
    )


class QueueLayout:
    """A queue's key groups: the queue-wide keys (`wide`) and each partition's (`parts`),
    and which partition holds a task (`for_task`)."""

    __slots__ = ("count", "parts", "prefix", "queue", "wide")

    def __init__(self, prefix: str, queue: str, partitions: int = 1) -> None:
        self.prefix, self.queue = prefix, queue
        self.count = check_partitions(partitions)
        self.wide = QueueKeys(prefix, queue)
        self.parts = (self.wide,) if self.count == 1 else partition_keys(prefix, queue, self.count)

    def for_task(self, task_id: str) -> QueueKeys:
        if self.count == 1:
            return self.wide
        return self.parts[zlib.crc32(task_id.encode()) % self.count]

    def index_of(self, task_id: str) -> int:
        return partition_of(task_id, self.count)


@dataclass(frozen=True, slots=True)
class QueueKeys:
    """The keys under one hash tag: a partition's, or (tag = the queue name) the queue-wide
    ones, which are also partition 0's when the queue has a single partition."""

    prefix: str
    queue: str
    tag: str = ""

    @property
    def base(self) -> str:
        return f"{self.prefix}:{{{self.tag or self.queue}}}:"

    @property
    def meta(self) -> str:
        """Hash (queue-wide): the queue's stored layout (`partitions`)."""
        return f"{self.base}meta"

    def task(self, task_id: str) -> str:
        return f"{self.base}task:{task_id}"

    def pending(self, task_type: str) -> str:
        return f"{self.base}pending:{task_type}"

    def wake(self, task_type: str | None = None) -> str:
        return f"{self.base}wake" if task_type is None else f"{self.base}wake:{task_type}"

    def done(self, task_id: str) -> str:
        return f"{self.base}done:{task_id}"

    def output(self, task_id: str) -> str:
        """Stream with a TTL: a task's output and progress, one entry per emit of the
        attempt holding the lease (lua/emit.lua), ended by a `k=end` entry at settle."""
        return f"{self.base}out:{task_id}"

    def blob(self, task_id: str, name: BlobName) -> str:
        """String: a task's payload or result stored apart from its hash (claim-check,
        above the queue's blob threshold); written and deleted with the task by the
        scripts (lua/include/common.lua blob_key, delete_task)."""
        return f"{self.base}blob:{task_id}:{name}"

    @property
    def blob_gc(self) -> str:
        """List: blob keys of deleted tasks whose blobs are in a user-supplied store
        (queue blob_store), for the client to delete there (lua/include/common.lua
        delete_task pushes, queue.collect_blobs() pops)."""
        return f"{self.base}blob_gc"

    def unique(self, task_type: str, digest: str) -> str:
        """String with a PX of the unique_for window: the id of the first task of that
        type and unique key (digest: windows.digest_of); enqueue.lua sets it."""
        return f"{self.base}unique:{task_type}:{digest}"

    def debounce(self, task_type: str, digest: str) -> str:
        """String with a TTL: the id of the delayed task that equal enqueues with
        `debounce` replace while it has not run (enqueue.lua)."""
        return f"{self.base}debounce:{task_type}:{digest}"

    @property
    def cancel_channel(self) -> str:
        return f"{self.base}cancel"

    @property
    def events(self) -> str:
        """Stream: the partition's task lifecycle events (lua/include/common.lua task_event)."""
        return f"{self.base}events"

    @property
    def delayed(self) -> str:
        return f"{self.base}delayed"

    @property
    def processing(self) -> str:
        return f"{self.base}processing"

    @property
    def completed(self) -> str:
        return f"{self.base}completed"

    @property
    def failed(self) -> str:
        return f"{self.base}failed"

    @property
    def cancelled(self) -> str:
        return f"{self.base}cancelled"

    @property
    def dlq(self) -> str:
        return f"{self.base}dlq"

    @property
    def stats(self) -> str:
        return f"{self.base}stats"

    @property
    def dlq_order(self) -> str:
        """Sorted set: the DLQ's ids by the time they were dead-lettered (ms), kept in step
        with the `dlq` set (which stays a set: the seed reads it with SCARD)."""
        return f"{self.base}dlq_at"

    def history(self, minute: int) -> str:
        """Hash with a TTL (HISTORY_TTL_SECONDS): one minute's counters (enqueued,
        completed, failed, retried, dead_lettered, cancelled), `minute` = server ms //
        60,000; lua/include/common.lua writes it (flush_history)."""
        return f"{self.base}hist:{minute}"

    @property
    def types(self) -> str:
        return f"{self.base}types"

    @property
    def ready(self) -> str:
        """The ready index: task types with pending tasks, by a lower bound of their best
        score (include/common.lua mark_ready), plus the member '' that says it is whole."""
        return f"{self.base}ready"

    @property
    def workers(self) -> str:
        return f"{self.base}workers"

    @property
    def worker_beats(self) -> str:
        return f"{self.base}worker_beats"

    # Fleet-wide limits (queue-wide; lua/include/limits.lua reads and writes them).
    @property
    def limits(self) -> str:
        """Hash: each limit's configuration, one field per kind (r:, c:, t:, p:<key>)."""
        return f"{self.base}limits"

    def limit_state(self, key: str) -> str:
        """Hash: a limit's bucket times, pause and how many tasks it last held back."""
        return f"{self.base}limit:{key}"

    def limit_held(self, key: str) -> str:
        """Sorted set: the tasks holding one of a limit's concurrency slots, by deadline."""
        return f"{self.base}held:{key}"

    def limit_waiters(self, key: str) -> str:
        """Set: task types with tasks a limit holds back (woken when it frees)."""
        return f"{self.base}lwait:{key}"

    # Pause and periodic schedules.
    @property
    def paused(self) -> str:
        """Hash (in every partition): what claims skip, field "*" (the whole queue) or a
        task type, value the server ms it was paused at; claim.lua reads it."""
        return f"{self.base}paused"

    @property
    def schedules(self) -> str:
        """Hash (queue-wide): each periodic schedule's definition (JSON), by name."""
        return f"{self.base}schedules"

    @property
    def schedule_due(self) -> str:
        """Sorted set (queue-wide): each schedule's next due time (server ms), by name."""
        return f"{self.base}schedule_due"

    @property
    def schedule_last(self) -> str:
        """Hash (queue-wide): each schedule's last tick, "<due ms> <ticks skipped in all>"."""
        return f"{self.base}schedule_last"

    # Pipeline runs that send their subtasks through this queue (owned by pipeline/).
    def run(self, run_id: str) -> str:
        """Hash: one run's state (a JSON document) and its owner's lease."""
        return f"{self.base}run:{run_id}"

    def run_lock(self, run_id: str) -> str:
        """String with a TTL: the manager driving the run; absent = free to resume."""
        return f"{self.base}run_lock:{run_id}"

    def run_events(self, run_id: str) -> str:
        """Stream with a TTL: one run's events (pipeline/events.py), in the order its
        manager emitted them; bounded, expiring with the run's record."""
        return f"{self.base}run_events:{run_id}"

    def run_decision(self, run_id: str) -> str:
        """List: the approval decision of a run waiting at its gate (JSON; the first one
        stands), or a cancel's wake-up; kept with the run."""
        return f"{self.base}run_decision:{run_id}"

    @property
    def runs(self) -> str:
        """Sorted set: every run id by creation time (ms)."""
        return f"{self.base}runs"

    @property
    def active_runs(self) -> str:
        """Set: ids of runs that have not ended (what a restarted manager resumes)."""
        return f"{self.base}active_runs"
