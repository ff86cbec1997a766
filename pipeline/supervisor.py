"""WorkerPool: worker processes by slot, the one supervisor behind `agentic worker -p N`
and the per-task-type workers `agentic pipeline run` starts (pipeline/launcher.py).

Each slot runs one command. `run()` supervises until every child has exited: SIGTERM and
SIGINT are forwarded to the children, and a child that exits with an error while the pool
is not stopping is started again after a backoff (0.5 s, doubling up to 30 s while it
keeps crashing quickly; a child that ran for a minute starts again from 0.5 s).
`respawn_dead()` restarts exited children at once, for callers that poll; `stop()` sends
SIGTERM to every child, waits up to the grace period, then kills what is left.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

__all__ = [
    "HEALTHY_RUN_SECONDS",
    "RESTART_BASE_SECONDS",
    "RESTART_CAP_SECONDS",
    "Command",
    "WorkerPool",
]

log = logging.getLogger("agentic.supervisor")

RESTART_BASE_SECONDS = 0.5
RESTART_CAP_SECONDS = 30.0
HEALTHY_RUN_SECONDS = 60.0
_POLL_SECONDS = 0.2  # the supervisor only watches child exits: there is nothing to await


@dataclass(frozen=True, slots=True)
class Command:
    argv: Sequence[str]
    env: Mapping[str, str] | None = None  # None: this process's environment


@dataclass(slots=True)
class _Child:
    proc: subprocess.Popen[bytes]
    started: float
    restart_at: float = 0.0  # > 0: it exited; start it again at this monotonic time
    delay: float = RESTART_BASE_SECONDS  # the backoff before its next restart


@dataclass
class WorkerPool:
    commands: Mapping[str, Command]
    grace_seconds: float = 10.0
    stdout: int | IO[Any] | None = None
    on_exit: Callable[[int], None] | None = None  # called with the pid of every child that exits
    children: dict[str, _Child] = field(default_factory=dict)
    stopping: bool = False

    @property
    def processes(self) -> dict[str, subprocess.Popen[bytes]]:
        return {slot: child.proc for slot, child in self.children.items()}

    def start(self) -> None:
        for slot in self.commands:
            self._spawn(slot)

    def _spawn(self, slot: str) -> None:
        command = self.commands[slot]
        env = dict(command.env) if command.env is not None else None
        proc = subprocess.Popen(list(command.argv), env=env, stdout=self.stdout)
        delay = self.children[slot].delay if slot in self.children else RESTART_BASE_SECONDS
        self.children[slot] = _Child(proc, time.monotonic(), delay=delay)
        log.info("started worker process %s (pid %d)", slot, proc.pid)

    def dead(self) -> list[str]:
        """Slots whose process exited."""
        return [slot for slot, child in self.children.items() if child.proc.poll() is not None]

    def respawn_dead(self) -> list[str]:
        """Start again, at once, the children that exited; returns their slots."""
        dead = self.dead()
        for slot in dead:
            self._spawn(slot)
        return dead

    def send_signal(self, signum: int) -> None:
        for child in self.children.values():
            if child.proc.poll() is None:
                child.proc.send_signal(signum)

    def stop(self) -> None:
        """SIGTERM to every child, then SIGKILL to those still running after the grace."""
        self.stopping = True
        self.send_signal(signal.SIGTERM)
        for child in self.children.values():
            try:
                child.proc.wait(self.grace_seconds + 5)
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait()
        self.children.clear()

    def run(self) -> int:
        """Start every slot and supervise until every child has exited; returns 0 when
        all stopped cleanly, else the first failing exit code (negative: a signal)."""

        def on_signal(signum: int, _frame: object) -> None:
            self.stopping = True
            self.send_signal(signum)

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        self.start()
        exit_code = 0
        while self.children:
            time.sleep(_POLL_SECONDS)
            for slot, child in list(self.children.items()):
                code = child.proc.poll()
                if code is None:
                    continue
                if self.on_exit is not None and child.restart_at == 0.0:
                    self.on_exit(child.proc.pid)
                if self.stopping or code == 0:
                    del self.children[slot]
                    exit_code = exit_code or (0 if code in (0, -signal.SIGTERM) else code)
                elif child.restart_at == 0.0:
                    self._schedule_restart(slot, child, code)
                elif time.monotonic() >= child.restart_at:
                    self._spawn(slot)
        return exit_code

    def _schedule_restart(self, slot: str, child: _Child, code: int) -> None:
        if time.monotonic() - child.started >= HEALTHY_RUN_SECONDS:
            child.delay = RESTART_BASE_SECONDS
        log.warning(
            "worker process %s (pid %d) exited with %s; restarting in %.1f s",
            slot, child.proc.pid, code, child.delay,
        )  # fmt: skip
        child.restart_at = time.monotonic() + child.delay
        child.delay = min(child.delay * 2, RESTART_CAP_SECONDS)
