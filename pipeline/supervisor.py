"""WorkerPool: worker processes by slot, the one supervisor behind `agentic worker -p N`
and the per-task-type workers `agentic pipeline run` starts (pipeline/launcher.py).

Each slot runs one command; its child gets SUPERVISOR_PID_ENV, so an `agentic worker` child
ties itself to this process (parent-death signal: it stops when the pool's process dies,
even by SIGKILL) and leaves the stop's deadline to the pool. `run()` supervises until every
child has exited. A stop (SIGTERM, SIGINT or SIGHUP to this process, or `stop()`) sends
SIGTERM to every child once, waits for the grace plus a margin for the hand-back, then
SIGKILLs what is left (a stopped or stuck child cannot hold the pool up); a second signal
kills at once. Whatever delivered the signal (the terminal's process group, systemd's whole
cgroup, or a kill of this pid alone), it is one graceful stop.

While the pool is not stopping, the pool size is kept: a child that exits, whatever its
code, is started again after a backoff (0.5 s, doubling up to 30 s while it keeps exiting
quickly; a child that ran for a minute starts again from 0.5 s). The exceptions: an exit 0
when `restart_clean_exits` is off (burst mode: the queue was drained), and an exit code in
`fatal_codes` (a usage error, such as a worker id already in use), which stops the pool.
`respawn_dead()` restarts exited children at once, for callers that poll.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from utils.parent_death import SUPERVISOR_PID_ENV

__all__ = [
    "HEALTHY_RUN_SECONDS",
    "RESTART_BASE_SECONDS",
    "RESTART_CAP_SECONDS",
    "STOP_MARGIN_SECONDS",
    "Command",
    "WorkerPool",
]

log = logging.getLogger("agentic.supervisor")

RESTART_BASE_SECONDS = 0.5
RESTART_CAP_SECONDS = 30.0
HEALTHY_RUN_SECONDS = 60.0
# After the grace a worker still hands back unfinished tasks, stops its lease keeper and
# leaves the registry: a few Redis round trips.
STOP_MARGIN_SECONDS = 3.0
_POLL_SECONDS = 0.1  # the supervisor only watches child exits: there is nothing to await
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


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
    restart_clean_exits: bool = True
    fatal_codes: Collection[int] = ()
    children: dict[str, _Child] = field(default_factory=dict)
    stopping: bool = False
    exit_code: int = 0
    _kill_at: float = 0.0  # > 0: SIGKILL every child still running at this monotonic time

    @property
    def processes(self) -> dict[str, subprocess.Popen[bytes]]:
        return {slot: child.proc for slot, child in self.children.items()}

    def start(self) -> None:
        for slot in self.commands:
            self._spawn(slot)

    def _spawn(self, slot: str) -> None:
        command = self.commands[slot]
        env = dict(command.env if command.env is not None else os.environ)
        env[SUPERVISOR_PID_ENV] = str(os.getpid())
        proc = subprocess.Popen(list(command.argv), env=env, stdout=self.stdout)
        delay = self.children[slot].delay if slot in self.children else RESTART_BASE_SECONDS
        self.children[slot] = _Child(proc, time.monotonic(), delay=delay)
        log.info("started worker process %s (pid %d)", slot, proc.pid)

    def dead(self) -> list[str]:
        """Slots whose process exited."""
        return [slot for slot, child in self.children.items() if child.proc.poll() is not None]

    def respawn_dead(self) -> list[str]:
        """Start again, at once, the children that exited; returns their slots."""
        dead = [] if self.stopping else self.dead()
        for slot in dead:
            self._spawn(slot)
        return dead

    def send_signal(self, signum: int) -> None:
        for child in self.children.values():
            if child.proc.poll() is None:
                child.proc.send_signal(signum)

    def begin_stop(self) -> None:
        """SIGTERM to every child, once; what still runs after the grace will be killed."""
        if self.stopping:
            return
        self.stopping = True
        self._kill_at = time.monotonic() + self.grace_seconds + STOP_MARGIN_SECONDS
        self.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        """Stop every child: SIGTERM, then SIGKILL to those still running after the grace."""
        self.begin_stop()
        while self.children:
            self._watch()
            time.sleep(_POLL_SECONDS)

    def run(self) -> int:
        """Start every slot and supervise until every child has exited. Returns 0 when all
        stopped cleanly, else 1, or the fatal exit code a child stopped the pool with."""
        previous = {signum: signal.signal(signum, self._on_signal) for signum in _STOP_SIGNALS}
        try:
            self.start()
            while self.children:
                time.sleep(_POLL_SECONDS)
                self._watch()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return self.exit_code

    def _on_signal(self, signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        if self.stopping:
            log.warning("%s while stopping: killing the worker processes now", name)
            self._kill_at = time.monotonic()
            return
        log.info(
            "%s: stopping %d worker processes (grace %.1f s)",
            name, len(self.children), self.grace_seconds,
        )  # fmt: skip
        self.begin_stop()

    def _watch(self) -> None:
        """One look at every child: reap, restart or (past the deadline) kill."""
        now = time.monotonic()
        if self.stopping and now >= self._kill_at:
            self._kill_leftovers()
        for slot, child in list(self.children.items()):
            code = child.proc.poll()
            if code is None:
                continue
            first_look = child.restart_at == 0.0
            if self.on_exit is not None and first_look:
                self.on_exit(child.proc.pid)
            if self.stopping:
                del self.children[slot]
                if first_look and code not in (0, -signal.SIGTERM):
                    self.exit_code = self.exit_code or 1
            elif code in self.fatal_codes:
                log.error("worker process %s (pid %d) exited with %d: stopping the pool",
                          slot, child.proc.pid, code)  # fmt: skip
                del self.children[slot]
                self.exit_code = code
                self.begin_stop()
            elif code == 0 and not self.restart_clean_exits:
                del self.children[slot]
            elif first_look:
                self._schedule_restart(slot, child, code)
            elif now >= child.restart_at:
                self._spawn(slot)

    def _kill_leftovers(self) -> None:
        for slot, child in self.children.items():
            if child.proc.poll() is None:
                log.warning(
                    "worker process %s (pid %d) still running after the grace: killing it",
                    slot, child.proc.pid,
                )  # fmt: skip
                child.proc.kill()  # SIGKILL also ends a stopped (SIGSTOP) process
                child.proc.wait()
                self.exit_code = self.exit_code or 1

    def _schedule_restart(self, slot: str, child: _Child, code: int) -> None:
        if time.monotonic() - child.started >= HEALTHY_RUN_SECONDS:
            child.delay = RESTART_BASE_SECONDS
        log.warning(
            "worker process %s (pid %d) exited with %s; restarting in %.1f s",
            slot, child.proc.pid, code, child.delay,
        )  # fmt: skip
        child.restart_at = time.monotonic() + child.delay
        child.delay = min(child.delay * 2, RESTART_CAP_SECONDS)
