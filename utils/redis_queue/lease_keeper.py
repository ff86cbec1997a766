"""Lease heartbeats from a separate process, so leases stay alive while a handler blocks the
event loop or holds the GIL in C code, and stop when the worker dies or is stopped.

The worker starts `python -m utils.redis_queue.keeper_process CONFIG_JSON` (that module is
the keeper's side) and talks to it over
pipes, one line per message:

    worker -> keeper   "+ <task_id> <token> <hard_limit_seconds> [<held>]"
                                                    start renewing (0 = no limit); <held>:
                                                    the limit keys (comma-separated) whose
                                                    slots a partitioned queue's task holds,
                                                    renewed with the lease
                       "- <task_id>"                                stop renewing
    keeper -> worker   "ready"                      first line, once it can take leases
                       "lost <task_id> <token>"     the lease was lost (reclaimed): stop it
                       "cancel <task_id> <token>"   a cancel was requested for the task
                       "expired <task_id> <token>"  its hard limit passed; renewals stopped

Renewals stop when the worker process exits (stdin closes), when it is stopped (SIGSTOP,
seen in /proc), and for a task whose hard limit (its timeout plus a grace) has passed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable

__all__ = ["PASSWORD_ENV", "LeaseKeeper"]

PASSWORD_ENV = "AGENTIC_LEASE_KEEPER_PASSWORD"
_READY_TIMEOUT = 30.0  # seconds for a keeper process to start (Python start-up, imports)
log = logging.getLogger("agentic.lease_keeper")


class LeaseKeeper:
    """The worker's handle on its keeper process."""

    def __init__(
        self,
        *,
        redis_url: str,
        password: str | None,
        key_prefix: str,
        queue_name: str,
        lease_seconds: float,
        on_event: Callable[[str, str, int | None], None],
        cluster: bool = False,
        partitions: int = 1,
    ) -> None:
        self._config = {
            "url": redis_url,
            "cluster": cluster,
            "partitions": partitions,
            "prefix": key_prefix,
            "queue": queue_name,
            "lease_ms": int(lease_seconds * 1000),
            "interval": max(0.05, lease_seconds / 3),
        }
        self._password = password
        self._on_event = on_event
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: list[str] = []
        # What the keeper renews now, to hand to a replacement if it dies.
        self._renewing: dict[str, str] = {}
        self._stopping = False

    async def start(self) -> None:
        env = dict(os.environ)
        if self._password:
            env[PASSWORD_ENV] = self._password
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "utils.redis_queue.keeper_process",
            json.dumps(self._config),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
            # Out of the worker's process group: a terminal's Ctrl-C or a killpg must not
            # end it while it starts or while the worker drains. It ends with the worker
            # (EOF on its stdin), even a SIGKILLed one.
            start_new_session=True,
        )
        # Leases handed to a keeper that is still starting would not be renewed: with a
        # short lease on a busy host they lapsed before its first renewal. So the worker
        # claims nothing until its keeper says it is ready.
        assert self._proc.stdout is not None
        try:
            first = await asyncio.wait_for(self._proc.stdout.readline(), _READY_TIMEOUT)
        except TimeoutError:
            first = b""
        if first.strip() != b"ready":
            self._proc.kill()
            await self._proc.wait()
            raise RuntimeError(f"lease keeper did not start (said {first!r})")
        self._reader = asyncio.create_task(self._read_events(), name="lease-keeper-events")

    def add(self, task_id: str, token: int, hard_limit: float | None, held: str = "") -> None:
        """Start renewing (sent on the next flush())."""
        extra = f" {held.replace(' ', ',')}" if held else ""
        line = f"+ {task_id} {token} {hard_limit or 0}{extra}\n"
        self._renewing[task_id] = line
        self._pending.append(line)

    def remove(self, task_id: str) -> None:
        """Stop renewing (sent on the next flush())."""
        self._renewing.pop(task_id, None)
        self._pending.append(f"- {task_id}\n")

    def flush(self) -> None:
        """Send what add() and remove() queued, in one pipe write."""
        if self._pending and self._proc is not None and self._proc.stdin is not None:
            self._proc.stdin.write("".join(self._pending).encode())
        self._pending.clear()

    async def stop(self) -> None:
        self._stopping = True
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        if self._reader is not None:
            try:
                await self._reader
            except Exception:  # a reader that failed must not stop the worker's shutdown
                log.exception("lease keeper reader failed")

    async def _read_events(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        async for raw in self._proc.stdout:
            event, task_id, token = ([*raw.decode().split(), "", ""])[:3]
            if task_id:
                self._on_event(event, task_id, int(token) if token.isdigit() else None)
        if self._stopping:
            return
        # The keeper died (killed, or crashed): start another with the same leases, or
        # they would all lapse while their handlers still run. Keep trying: a worker whose
        # leases are never renewed would see every task it runs taken from it.
        log.error("lease keeper exited unexpectedly; starting a new one")
        pause = 0.5
        while not self._stopping:
            try:
                await self.start()
            except (RuntimeError, OSError) as exc:
                log.error("cannot restart the lease keeper (%s); again in %.1f s", exc, pause)
                await asyncio.sleep(pause)  # backoff between process starts
                pause = min(pause * 2, 10.0)
                continue
            self._pending = list(self._renewing.values())
            self.flush()
            return


# -- the keeper process -------------------------------------------------------------------
