"""Errors of pipeline runs, rooted at PipelineError (not a QueueError: a run's failures
are not the queue's; an outage still surfaces as the queue's RedisUnavailable).

PipelineError
├── SpecError (also ValueError)      a pipeline spec that cannot be read or is not valid
├── RunNotFound (also LookupError)
├── RunStoreError                    a stored run this version cannot read
├── RunAlreadyDriven                 another manager holds the run's lock
├── RunOwnershipLost                 this manager lost the run's lock to another
└── RunInterrupted                   this manager stopped driving a run before it ended
"""

from __future__ import annotations

__all__ = [
    "PipelineError",
    "RunAlreadyDriven",
    "RunInterrupted",
    "RunNotFound",
    "RunOwnershipLost",
    "RunStoreError",
    "SpecError",
]


class PipelineError(Exception):
    """Root of every error of pipeline runs."""


class SpecError(PipelineError, ValueError):
    """A pipeline spec that cannot be read or is not valid."""


class RunNotFound(PipelineError, LookupError):
    def __init__(self, run_id: str) -> None:
        super().__init__(f"no pipeline run {run_id!r}")
        self.run_id = run_id


class RunStoreError(PipelineError):
    """A stored run that cannot be read back (corrupt or from an incompatible version)."""


class RunAlreadyDriven(PipelineError):
    def __init__(self, run_id: str) -> None:
        super().__init__(f"run {run_id!r} is already driven by another manager")
        self.run_id = run_id


class RunOwnershipLost(PipelineError):
    """This manager no longer holds the run's lock: another manager drives it now."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"run {run_id!r} is driven by another manager now")
        self.run_id = run_id


class RunInterrupted(PipelineError):
    """A run this manager stopped driving before it ended (stop(), or a takeover). Its
    state is saved: a manager that starts, or `agentic pipeline resume`, drives it on."""

    def __init__(self, run_id: str, why: str) -> None:
        super().__init__(f"run {run_id!r} did not end here: {why}")
        self.run_id = run_id
