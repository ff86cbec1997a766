"""Where a worker's time goes per task (C with --profile-workers): the worker process's
CPU by piece, measured in a second drain with bench/harness/worker_timing.py, and the
Redis server's time by script from SLOWLOG (private server only).

    claim         Consumer.claim_ready, less the task decode
    dispatch      decode: codec.text_fields, codec.decode_task; start: Worker._start
                  (the asyncio task); run: Worker._execute (the context, the handler
                  call); finished: Worker._finished; less the lease keeper's add/remove
    settle        call: Settler.run (settle_many: the items, the script call, the
                  replies); count: Worker._count, the worker's record of each outcome
    heartbeat     LeaseKeeper add/remove/flush/_read_events in the worker; the keeper
                  process's own CPU (it renews the leases) is apart
    wake          Worker._wait_for and Consumer.wait_for_work (BLPOP on the wake keys)
    socket reads  the event loop reading replies (_SelectorSocketTransport._read_ready)
    loop, rest    the rest of the main thread's CPU from the first claim to the exit: the
                  event loop, the claim loop's own code, the helpers (registry beat,
                  cancel listener, scheduler), the shutdown

The timed run's pieces (thread CPU clock: a preempted call costs only its CPU) are
scaled onto the worker CPU per task of the untimed run in the same scenario (the timing
itself adds ~1 us per wrapped call).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from redis.asyncio import Redis

from utils.redis_queue.scripts.contract import SCRIPTS
from utils.redis_queue.scripts.runner import script_sha

PIECES = ("claim", "dispatch", "settle", "heartbeat", "wake", "socket reads", "loop, rest")
# What worker_timing.py measures apart inside a piece ("dispatch: decode" is in "dispatch").
PARTS = {
    "dispatch": ("decode", "start", "run", "finished"),
    "settle": ("call", "count"),
}


@dataclass(frozen=True)
class CpuBreakdown:
    timed_us: dict[str, float]  # per task, in the timed run: PIECES and their parts

    def shares(self) -> dict[str, float]:
        total = sum(self.timed_us[p] for p in PIECES) or 1.0
        return {piece: us / total for piece, us in self.timed_us.items()}


def cpu_breakdown(timing: Path, tasks: int) -> CpuBreakdown:
    """The worker's main-thread CPU per task, by piece (see the module docstring)."""
    seconds: dict[str, float] = json.loads(timing.read_text())["seconds"]
    for piece, parts in PARTS.items():
        seconds[piece] = sum(seconds.get(f"{piece}: {part}", 0.0) for part in parts)
    return CpuBreakdown({p: s / tasks * 1e6 for p, s in seconds.items()})


# -- the server's side: SLOWLOG with threshold 0 ---------------------------------------


class ScriptLog:
    """SLOWLOG on a private server, restored on exit: the server time of each script
    call (EVALSHA, by SHA). Redis 7 logs the commands a script runs too (~1 us each,
    ~12 per task): THRESHOLD_US keeps them out and every script call in (~300 us)."""

    THRESHOLD_US = 10

    def __init__(self, admin: Redis, capacity: int) -> None:
        self.admin = admin
        self.capacity = capacity
        self._saved: dict[str, str] = {}

    async def __aenter__(self) -> ScriptLog:
        config = await self.admin.config_get("slowlog-*")
        self._saved = {k: str(config[k]) for k in ("slowlog-log-slower-than", "slowlog-max-len")}
        await self.admin.config_set("slowlog-max-len", self.capacity)
        await self.admin.config_set("slowlog-log-slower-than", self.THRESHOLD_US)
        await self.admin.slowlog_reset()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for name, value in self._saved.items():
            await self.admin.config_set(name, value)

    async def by_command(self) -> tuple[dict[str, tuple[int, int]], bool]:
        """(name -> (calls, usec)) since entry: scripts by name ("claim", "settle_many"),
        other commands lower case; and whether the log overflowed (then partial)."""
        names = {script_sha(name): name for name in SCRIPTS}
        entries = await self.admin.slowlog_get(self.capacity)
        totals: dict[str, tuple[int, int]] = {}
        for entry in entries:
            words = bytes(entry["command"]).split(b" ", 2)
            command = words[0].decode(errors="replace").lower()
            if command in ("slowlog", "config", "info"):  # the bench's own
                continue
            if command == "evalsha" and len(words) > 1:
                command = names.get(words[1].decode(errors="replace"), "evalsha ?")
            calls, usec = totals.get(command, (0, 0))
            totals[command] = (calls + 1, usec + int(entry["duration"]))
        return totals, len(entries) >= self.capacity


# Which scripts count as which piece of a worker's task; BLPOP (commandstats) is "wake".
SERVER_PIECES = {"claim": "claim", "settle_many": "settle", "extend": "heartbeat"}


def server_breakdown(
    logged: dict[str, tuple[int, int]], stats: dict[str, tuple[int, int]], tasks: int
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """(piece -> server us per task, script -> {calls_per_task, usec_per_call}) from the
    SLOWLOG's scripts and INFO commandstats' BLPOP."""
    pieces = dict.fromkeys(("claim", "settle", "heartbeat", "wake", "rest"), 0.0)
    detail = {}
    for name, (calls, usec) in logged.items():
        pieces[SERVER_PIECES.get(name, "rest")] += usec / tasks
        detail[name] = {"calls_per_task": calls / tasks, "usec_per_call": usec / calls}
    calls, usec = stats.get("blpop", (0, 0))
    if calls:
        pieces["wake"] += usec / tasks
        detail["blpop"] = {"calls_per_task": calls / tasks, "usec_per_call": usec / calls}
    return pieces, detail
