"""A worker process for the fault suite: `python -m tests.support.fault_worker`.

The same path as `agentic worker` in one process (a RedisTaskQueue, a Worker serving
tests.support.fault_apps, the SIGTERM/SIGINT handlers), configured from the environment below, so
the suite does not depend on the CLI's own options:

    FAULT_REDIS_URL, FAULT_QUEUE                  where
    FAULT_LEASE (s), FAULT_MAX_LEASE_LOSSES       the queue's lease settings
    FAULT_CONCURRENCY, FAULT_GRACE (s)            the worker's
    FAULT_SOCKET_TIMEOUT (s)                      Redis command timeout (default 2)
    FAULT_MAX_PAYLOAD_BYTES                       the queue's payload and result limit
    FAULT_BURST=1                                 drain, then exit
    AGENTIC_FAULT_LEDGER                          the ledger directory (ledger.py)
    AGENTIC_DEBUG_CRASH_AT                        the engine's crash hook (worker.py)
"""

from __future__ import annotations

import asyncio
import logging
import os

from tests.support.fault_apps import registry
from utils.redis_queue import RedisTaskQueue, RetryPolicy
from utils.redis_queue.signals import install_signal_handlers
from utils.redis_queue.worker import Worker

FAST_RETRY = RetryPolicy(first_immediate=True, base_seconds=0.05, factor=2.0, cap_seconds=0.2)


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


async def main() -> None:
    timeout = float(_env("FAULT_SOCKET_TIMEOUT", "2"))
    queue = RedisTaskQueue(
        queue_name=_env("FAULT_QUEUE", "faults"),
        redis_url=_env("FAULT_REDIS_URL", "redis://127.0.0.1:6379/0"),
        lease_seconds=float(_env("FAULT_LEASE", "1")),
        max_lease_losses=int(_env("FAULT_MAX_LEASE_LOSSES", "3")),
        retry_policy=FAST_RETRY,
        socket_timeout=timeout,
        connect_timeout=timeout,
        max_payload_bytes=int(_env("FAULT_MAX_PAYLOAD_BYTES", "1048576")),
    )
    worker = Worker(
        queue,
        registry,
        concurrency=int(_env("FAULT_CONCURRENCY", "10")),
        shutdown_grace=float(_env("FAULT_GRACE", "5")),
        beat_interval=1.0,
        burst=_env("FAULT_BURST", "") == "1",
    )
    install_signal_handlers(worker)
    try:
        stats = await worker.run()
    finally:
        await queue.close()
    logging.getLogger("agentic.worker").info("worker stopped: %s", stats)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    asyncio.run(main())
