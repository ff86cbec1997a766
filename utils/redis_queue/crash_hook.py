"""Fault injection for the fault suite (tests/faults/): AGENTIC_DEBUG_CRASH_AT=<step>[:<n>]
makes a worker exit at once (os._exit(CRASH_EXIT_CODE)) the n-th time (default: the first)
it reaches <step>, one of CRASH_STEPS: just before or just after the claim round trip
(after: only when tasks were claimed), the settle round trip, or the hand-back on
shutdown. Read once when the Worker is built; unset, each step costs one attribute test."""

from __future__ import annotations

import os

__all__ = ["CRASH_ENV", "CRASH_EXIT_CODE", "CRASH_STEPS", "CrashHook", "crash_hook_from_env"]

CRASH_ENV = "AGENTIC_DEBUG_CRASH_AT"
CRASH_EXIT_CODE = 86
CRASH_STEPS = (
    "claim.before",
    "claim.after",
    "settle.before",
    "settle.after",
    "release.before",
    "release.after",
)


class CrashHook:
    """Exit the process at the n-th arrival at one step."""

    def __init__(self, spec: str) -> None:
        step, _, nth = spec.partition(":")
        if step not in CRASH_STEPS or not (nth or "1").isdigit():
            raise ValueError(f"{CRASH_ENV}={spec!r}: use <step>[:<n>], step one of {CRASH_STEPS}")
        self.step, self.left = step, int(nth or "1")

    def reached(self, step: str) -> None:
        if step == self.step:
            self.left -= 1
            if self.left <= 0:
                os.write(2, f"{CRASH_ENV}: exiting at {step}\n".encode())
                os._exit(CRASH_EXIT_CODE)


def crash_hook_from_env() -> CrashHook | None:
    value = os.environ.get(CRASH_ENV)
    return CrashHook(value) if value else None
