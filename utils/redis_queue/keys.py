"""Every Redis key of a queue is built here (and mirrored in lua/include/common.lua).

All keys share the hash tag ``{<queue>}`` so each script touches one Cluster slot.
Queue names, task ids and task types are validated before they reach a key, so no
user input can add a hash tag, a glob character or a separator of its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import InvalidQueueName, InvalidTaskId, InvalidTaskType

__all__ = ["QueueKeys", "validate_queue_name", "validate_task_id", "validate_task_type"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}")
_TASK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-:@]{0,199}")
_TASK_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
_KNOWN_TYPES: set[str] = set()


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


@dataclass(frozen=True, slots=True)
class QueueKeys:
    prefix: str
    queue: str

    @property
    def base(self) -> str:
        return f"{self.prefix}:{{{self.queue}}}:"

    def task(self, task_id: str) -> str:
        return f"{self.base}task:{task_id}"

    def pending(self, task_type: str) -> str:
        return f"{self.base}pending:{task_type}"

    def wake(self, task_type: str | None = None) -> str:
        return f"{self.base}wake" if task_type is None else f"{self.base}wake:{task_type}"

    def done(self, task_id: str) -> str:
        return f"{self.base}done:{task_id}"

    @property
    def cancel_channel(self) -> str:
        return f"{self.base}cancel"

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
    def types(self) -> str:
        return f"{self.base}types"

    @property
    def workers(self) -> str:
        return f"{self.base}workers"

    @property
    def worker_beats(self) -> str:
        return f"{self.base}worker_beats"

    # Pipeline runs that send their subtasks through this queue (owned by pipeline/).
    def run(self, run_id: str) -> str:
        """Hash: one run's state (a JSON document) and its owner's lease."""
        return f"{self.base}run:{run_id}"

    def run_lock(self, run_id: str) -> str:
        """String with a TTL: the manager driving the run; absent = free to resume."""
        return f"{self.base}run_lock:{run_id}"

    @property
    def runs(self) -> str:
        """Sorted set: every run id by creation time (ms)."""
        return f"{self.base}runs"

    @property
    def active_runs(self) -> str:
        """Set: ids of runs that have not ended (what a restarted manager resumes)."""
        return f"{self.base}active_runs"
