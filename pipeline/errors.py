"""Errors of pipeline runs; all are QueueErrors, so one `except QueueError` covers them."""

from __future__ import annotations

from utils.redis_queue import QueueError

__all__ = ["RunInterrupted", "RunNotFound", "RunOwnershipLost", "RunStoreError"]


class RunNotFound(QueueError):
    def __init__(self, run_id: str) -> None:
        super().__init__(f"no pipeline run {run_id!r}")
        self.run_id = run_id


class RunStoreError(QueueError):
    """A stored run that cannot be read back (corrupt or from an incompatible version)."""


class RunOwnershipLost(QueueError):
    """This manager no longer holds the run's lock: another manager drives it now."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"run {run_id!r} is driven by another manager now")
        self.run_id = run_id


class RunInterrupted(QueueError):
    """A run this manager stopped driving before it ended (stop(), or a takeover). Its
    state is saved: a manager that starts, or `agentic pipeline resume`, drives it on."""

    def __init__(self, run_id: str, why: str) -> None:
        super().__init__(f"run {run_id!r} did not end here: {why}")
        self.run_id = run_id
