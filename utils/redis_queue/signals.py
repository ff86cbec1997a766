"""How a worker process answers signals: SIGTERM and SIGINT ask for a graceful stop."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import Protocol

__all__ = ["Stoppable", "install_signal_handlers"]

log = logging.getLogger("agentic.worker")


class Stoppable(Protocol):
    @property
    def stopping(self) -> bool: ...

    @property
    def shutdown_grace(self) -> float: ...

    def request_stop(self) -> None: ...


def install_signal_handlers(worker: Stoppable) -> None:
    """SIGTERM/SIGINT: graceful stop; a second signal exits at once (leases then expire
    and the tasks are reclaimed by other workers)."""
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if worker.stopping:
            log.warning("second %s: exiting now", signal.Signals(signum).name)
            os._exit(128 + signum)
        log.info("%s: stopping (grace %.1f s)", signal.Signals(signum).name, worker.shutdown_grace)
        worker.request_stop()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
