"""The lease keeper's own process: `python -m utils.redis_queue.keeper_process CONFIG_JSON`,
started by LeaseKeeper (lease_keeper.py, which describes the protocol). It renews the leases
the worker hands it, pipelined, every interval, and reports lost leases and cancel requests.
Kept out of the package's imports, so running it as __main__ loads it only once."""

from __future__ import annotations

import json
import os
import selectors
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from . import scripts
from .connection import parse_topology
from .keys import QueueLayout
from .lease_keeper import PASSWORD_ENV
from .topology import sync_client

__all__ = ["main"]

COMPLAINT_INTERVAL = 5.0


@dataclass(slots=True)
class _Lease:
    token: str
    hard_deadline: float | None  # monotonic
    cancel_reported: bool = False
    held: str = ""  # limit keys whose slots it holds (a partitioned queue's), space-separated


def _parent_is_stopped(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            # The state is the first field after the parenthesised command name.
            return f.read().rpartition(")")[2].split()[0] in ("T", "t")
    except OSError:
        return False


class _Keeper:
    def __init__(self, config: dict[str, Any]) -> None:
        # The queue's own kind of client: on a cluster it follows MOVED/ASK and failovers
        # (a plain client would get MOVED for every lease on another node, and the
        # leases would lapse while their tasks still run), on Sentinel the new primary.
        self.redis = sync_client(
            parse_topology(config["url"], cluster=bool(config.get("cluster"))),
            password=os.environ.get(PASSWORD_ENV),
            socket_timeout=max(1.0, config["interval"]),
            connect_timeout=max(1.0, config["interval"]),
        )
        self.layout = QueueLayout(config["prefix"], config["queue"], config.get("partitions", 1))
        self.lease_ms = int(config["lease_ms"])
        self.interval = float(config["interval"])
        self.leases: dict[str, _Lease] = {}
        self.parent = os.getppid()
        self.last_complaint = float("-inf")

    def complain(self, message: str) -> None:
        """To stderr, at most every COMPLAINT_INTERVAL seconds (an outage repeats it)."""
        now = time.monotonic()
        if now - self.last_complaint >= COMPLAINT_INTERVAL:
            self.last_complaint = now
            print(f"lease keeper: {message}", file=sys.stderr, flush=True)

    def emit(self, event: str, task_id: str, token: str) -> None:
        sys.stdout.write(f"{event} {task_id} {token}\n")
        sys.stdout.flush()

    def handle(self, line: str) -> None:
        parts = line.split()
        if len(parts) in (4, 5) and parts[0] == "+":
            limit = float(parts[3])
            deadline = time.monotonic() + limit if limit > 0 else None
            held = parts[4].replace(",", " ") if len(parts) == 5 else ""
            self.leases[parts[1]] = _Lease(parts[2], deadline, held=held)
        elif len(parts) == 2 and parts[0] == "-":
            self.leases.pop(parts[1], None)

    def renew(self) -> None:
        if not self.leases or _parent_is_stopped(self.parent):
            return
        now = time.monotonic()
        for task_id, lease in list(self.leases.items()):
            if lease.hard_deadline is not None and now > lease.hard_deadline:
                del self.leases[task_id]
                self.emit("expired", task_id, lease.token)
        ids = list(self.leases)
        try:
            replies = self._extend_all(ids)
        except RedisError as exc:
            self.complain(f"renewal failed: {exc}")
            return
        failed = [r for r in replies if isinstance(r, Exception)]
        if failed:  # tried again next interval; said, so a lapsing lease has a cause
            self.complain(f"{len(failed)} of {len(ids)} renewals failed: {failed[0]}")
        for task_id, reply in zip(ids, replies, strict=True):
            current = self.leases.get(task_id)
            if current is None or isinstance(reply, Exception):
                continue
            code = int(reply[0])
            if code in (scripts.Code.LEASE_LOST, scripts.Code.NOT_FOUND):
                del self.leases[task_id]
                self.emit("lost", task_id, current.token)
            elif (
                code == 0 and scripts.extend_cancel_requested(reply) and not current.cancel_reported
            ):
                current.cancel_reported = True
                self.emit("cancel", task_id, current.token)
        self._extend_permits(ids, replies)

    def _extend_permits(self, ids: list[str], replies: list[Any]) -> None:
        """Renew the limit slots of the leases just renewed (a partitioned queue keeps
        them in the limits' own slot, which the leases' scripts cannot reach)."""
        held = [
            (task_id, self.leases[task_id].held)
            for task_id, reply in zip(ids, replies, strict=True)
            if task_id in self.leases
            and self.leases[task_id].held
            and not isinstance(reply, Exception)
            and int(reply[0]) == 0
        ]
        if not held:
            return
        call = scripts.extend_permits(self.layout.wide, lease_ms=self.lease_ms, held=held)
        try:
            scripts.run_sync(self.redis, call)
        except RedisError as exc:
            self.complain(f"renewing limit slots failed: {exc}")

    def _extend_all(self, ids: list[str]) -> list[Any]:
        calls = [
            scripts.extend(
                self.layout.for_task(task_id),
                task_id=task_id,
                token=self.leases[task_id].token,
                lease_ms=self.lease_ms,
            )
            for task_id in ids
        ]
        return scripts.run_pipelined(self.redis, calls)

    def run(self) -> None:
        self.emit("ready", "", "")
        selector = selectors.DefaultSelector()
        selector.register(sys.stdin, selectors.EVENT_READ)
        next_tick = time.monotonic() + self.interval
        buffer = ""
        while True:
            timeout = max(0.0, next_tick - time.monotonic())
            if selector.select(timeout):
                chunk = os.read(sys.stdin.fileno(), 65536).decode()
                if not chunk:  # the worker exited: its leases must now expire
                    return
                buffer += chunk
                *lines, buffer = buffer.split("\n")
                for line in lines:
                    self.handle(line)
            if time.monotonic() >= next_tick:
                self.renew()
                next_tick = time.monotonic() + self.interval
            if os.getppid() != self.parent:
                return


def main() -> None:
    # A terminal's Ctrl-C or a systemd stop signals the worker's whole group: the keeper
    # must go on renewing while the worker drains, and ends when the worker does (EOF).
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    _Keeper(json.loads(sys.argv[1])).run()


if __name__ == "__main__":
    main()
