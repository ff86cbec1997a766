"""How a worker process answers signals.

SIGTERM, SIGINT and SIGHUP each ask for one graceful stop (SIGHUP: the terminal went away,
or an operator's "stop"; there is no configuration to reload, so it stops like SIGTERM).
A second signal to a worker that runs alone exits at once (an operator pressing Ctrl-C
twice). A worker under a supervisor ignores repeats: a terminal's Ctrl-C or a systemd stop
signals the whole process group, so it gets the signal both directly and forwarded by its
parent, and the parent, not the child, kills what is still running after the grace.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import Protocol

__all__ = ["STOP_SIGNALS", "Stoppable", "install_signal_handlers", "remember_early_stops"]

log = logging.getLogger("agentic.worker")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class Stoppable(Protocol):
    @property
    def stopping(self) -> bool: ...

    @property
    def shutdown_grace(self) -> float: ...

    def request_stop(self) -> None: ...


def remember_early_stops() -> list[int]:
    """Until install_signal_handlers() runs, a stop signal is noted here instead of killing
    the process: a worker stopped while it starts (a pool stopped just after a restart)
    then stops gracefully, having claimed nothing, and exits 0."""
    received: list[int] = []
    for signum in STOP_SIGNALS:
        signal.signal(signum, lambda signum, _frame: received.append(signum))
    return received


def install_signal_handlers(
    worker: Stoppable, *, supervised: bool = False, early: list[int] | None = None
) -> None:
    """Each stop signal: a graceful stop; a second one exits at once unless `supervised`
    (then leases of unfinished tasks expire and other workers reclaim them). `early`:
    what remember_early_stops() noted meanwhile."""
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        name = signal.Signals(signum).name
        if worker.stopping:
            if supervised:
                log.info("%s: already stopping (the supervisor enforces the grace)", name)
                return
            log.warning("second %s: exiting now", name)
            os._exit(128 + signum)
        log.info("%s: stopping (grace %.1f s)", name, worker.shutdown_grace)
        worker.request_stop()

    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, on_signal, signum)
    if early:
        on_signal(early[0])  # the repeats were the same stop, delivered twice
