"""Soak: the fault suite's harness for as long as you like, with mixed faults.

    .venv/bin/python bench/soak.py --minutes 30
    .venv/bin/python bench/soak.py --minutes 5 --persistence everysec --seed 7

Starts a private redis-server (AOF `always` by default) and N worker processes
(tests.support.fault_worker), enqueues a steady stream of tasks of 5-50 ms, and every few
seconds injects one fault drawn with the seed: SIGKILL of a
worker (restarted), SIGSTOP of a worker past its lease (then SIGCONT), a worker started
with the engine's crash hook at a random step, a poison task, SIGKILL and restart of
Redis, Redis frozen for 2-5 s, CLIENT PAUSE, SCRIPT FLUSH. At the end it stops the load,
waits for the queue to drain, reconciles the ledger with Redis (tests/support/checker.py)
and prints the totals. Exit status 0 on a standard pass (lost 0, structural 0, every
duplicate on a lost lease); with `--persistence everysec|none` loss is only reported.
Not part of CI. Set AGENTIC_FAULT_LEDGER_FSYNC=1 to fsync every ledger line.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import cast

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.checker import reconcile  # noqa: E402
from tests.support.fault_servers import FaultRedis, Persistence  # noqa: E402
from tests.support.fault_workers import FaultWorkers  # noqa: E402
from tests.support.ledger import Ledger  # noqa: E402
from tests.support.load import Producer, drained  # noqa: E402
from utils.redis_queue import QueueError, RedisTaskQueue, RetryPolicy  # noqa: E402
from utils.redis_queue.worker import CRASH_STEPS  # noqa: E402

FAULTS = (
    "kill_worker",
    "stop_worker",
    "crash_hook",
    "poison",
    "kill_redis",
    "freeze_redis",
    "pause_clients",
    "script_flush",
)
LEASE = 2.0


class Soak:
    def __init__(self, args: argparse.Namespace, root: Path) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.ledger = Ledger(root / "ledger")
        self.server = FaultRedis(cast(Persistence, args.persistence))
        self.faults: Counter[str] = Counter()
        self.poisons = 0

    async def run(self) -> int:
        self.server.start()
        q = RedisTaskQueue(
            queue_name="soak",
            redis_url=self.server.url,
            lease_seconds=LEASE,
            max_lease_losses=2,
            retry_policy=RetryPolicy(first_immediate=True, base_seconds=0.05, cap_seconds=0.2),
            socket_timeout=1.0,
            connect_timeout=1.0,
        )
        await q.connect()
        workers = FaultWorkers(
            self.server.url, "soak", self.ledger.root, lease=LEASE, max_lease_losses=2
        )
        try:
            for _ in range(self.args.workers):
                workers.start()
            producer = Producer(q, self.ledger.producer(), seed=self.args.seed)
            producer.start(rate=self.args.rate)
            deadline = time.monotonic() + self.args.minutes * 60
            while time.monotonic() < deadline:
                await asyncio.sleep(self.rng.uniform(2.0, 5.0))  # the fault schedule
                await self.inject(self.rng.choice(FAULTS), q, workers)
                self.revive(workers)
                print(f"  {time.monotonic() - deadline:+7.0f} s  faults {dict(self.faults)}")
            await producer.stop()
            ok = await drained(q, producer.acked, timeout=120)
            codes = [await workers.wait_exit(p, 30) for p in _terminate(workers)]
            report = await reconcile(q, self.ledger, records_not_enqueued=0)
        finally:
            workers.cleanup()
            await q.close()
            if self.server.proc is not None and self.server.proc.poll() is None:
                self.server.thaw()  # a stopped server ignores SIGTERM
            self.server.cleanup()
        print(f"\nfaults injected: {sum(self.faults.values())} {dict(self.faults)}")
        print(f"drained: {ok}; worker exit codes at the end: {codes}")
        print(f"enqueues refused while Redis was away: {len(producer.refused)}")
        print(report.details())
        passed = not report.structural and (
            self.args.persistence != "always" or (not report.lost and not report.unexplained)
        )
        print("STANDARD PASS" if passed else "FAILED")
        return 0 if passed and ok else 1

    async def inject(self, fault: str, q: RedisTaskQueue, workers: FaultWorkers) -> None:
        self.faults[fault] += 1
        alive = workers.alive()
        if fault == "kill_worker" and alive:
            workers.kill(self.rng.choice(alive))
        elif fault == "stop_worker" and alive:
            victim = self.rng.choice(alive)
            workers.freeze(victim)
            await asyncio.sleep(LEASE * 1.5)
            workers.thaw(victim)
        elif fault == "crash_hook":
            step = self.rng.choice(CRASH_STEPS[:4])
            workers.start(AGENTIC_DEBUG_CRASH_AT=f"{step}:{self.rng.randint(1, 20)}")
        elif fault == "poison":
            self.poisons += 1
            try:
                await q.enqueue(f"poison-{self.poisons}", "work", {"crash": True})
            except QueueError:
                self.faults[fault] -= 1
        elif fault == "kill_redis":
            await self.server.crash_and_restart(down_seconds=self.rng.uniform(0.1, 1.0))
        elif fault == "freeze_redis":
            await self.server.freeze_for(self.rng.uniform(2.0, 5.0))
        elif fault == "pause_clients":
            await self.server.pause_clients(self.rng.uniform(0.5, 2.0))
        elif fault == "script_flush":
            admin = await self.server.client()
            await admin.script_flush()
            await admin.aclose()

    def revive(self, workers: FaultWorkers) -> None:
        """Keep `--workers` processes: replace the dead (killed, crashed, poisoned)."""
        for proc in [p for p in workers.procs if p.poll() is not None]:
            workers.procs.remove(proc)
        while len(workers.alive()) < self.args.workers:
            workers.start()


def _terminate(workers: FaultWorkers) -> list[subprocess.Popen[bytes]]:
    live = workers.alive()
    for proc in live:
        workers.terminate(proc)
    return live


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--persistence", choices=["always", "everysec", "none"], default="always")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--rate", type=float, default=200.0, help="enqueues per second")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the ledger directory")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="agentic-soak-"))
    print(f"soak: {args.minutes} min, appendfsync {args.persistence}, seed {args.seed}, "
          f"ledger {root}")  # fmt: skip
    try:
        code = asyncio.run(Soak(args, root).run())
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
