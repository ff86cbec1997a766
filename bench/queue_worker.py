"""The seed's worker loop in a process of its own, for scenario E of queue_bench.py.

    python bench/queue_worker.py --redis-url redis://127.0.0.1:6379/0 --queue bench

Prints "ready" once connected, then dequeues and completes every task with {"ok": True}.
It exits after completing a task of type STOP_TYPE, or after `--idle-exit` seconds
without work (a safety net should the benchmark die without stopping it).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from utils.redis_queue import RedisTaskQueue  # noqa: E402

STOP_TYPE = "bench-stop"
DEQUEUE_TIMEOUT = 1.0


async def work(queue: RedisTaskQueue, worker_id: str, idle_exit: float) -> int:
    """The seed loop: dequeue, complete, repeat. Returns the number of tasks handled."""
    handled = 0
    idle = 0.0
    while idle < idle_exit:
        task = await queue.dequeue(worker_id, timeout=DEQUEUE_TIMEOUT)
        if task is None:
            idle += DEQUEUE_TIMEOUT
            continue
        idle = 0.0
        await queue.complete_task(task.task_id, {"ok": True})
        if task.task_type == STOP_TYPE:
            break
        handled += 1
    return handled


async def run(redis_url: str, queue_name: str, worker_id: str, idle_exit: float) -> int:
    async with RedisTaskQueue(queue_name=queue_name, redis_url=redis_url) as queue:
        print("ready", flush=True)
        return await work(queue, worker_id, idle_exit)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--worker-id", default="bench-worker")
    parser.add_argument("--idle-exit", type=float, default=60.0)
    args = parser.parse_args(argv)
    handled = asyncio.run(run(args.redis_url, args.queue, args.worker_id, args.idle_exit))
    print(f"handled {handled}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
