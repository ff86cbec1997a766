"""Scenario N: Redis memory per pending task as the payload grows (1 KiB to 10 MiB),
inline and claim-checked, against a bare hash holding the same payload; and the time of
one 10 MiB enqueue and get_task against a raw HSET / HGET of the same bytes.

Memory is MEMORY USAGE (SAMPLES 0: every field counted) of the task hash plus its blob
key, averaged over the tasks of a size, the tasks enqueued by enqueue_many (no worker).
Modes: "inline" (blob_threshold_bytes off: the payload is one hash field) and
"claim-check" (the default 64 KiB threshold: larger payloads go to a string key of
their own). The baseline is `HSET <key> payload <the same JSON>`, one key per task.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from bench.harness.config import QUICK, TASK_TYPE
from bench.harness.context import Bench, Row, clear_keys
from utils.redis_queue import RedisTaskQueue

KIB = 1024
MIB = 1024 * KIB
SIZES = (KIB, 16 * KIB, 64 * KIB, MIB, 10 * MIB)
INLINE = 2**40  # a blob threshold no payload reaches
DEFAULT_THRESHOLD = 65_536
MODES = {"inline": INLINE, "claim-check": DEFAULT_THRESHOLD}
MAX_PAYLOAD = 64 * MIB
TARGET_RATIO = 1.25  # tests/test_claim_check.py: at most x1.25 + 600 B of the payload,
TARGET_SLACK = 600  # from 1 KiB to 1 MiB


def tasks_of(size: int, quick: bool) -> int:
    """Tasks averaged over per size: 200 up to 64 KiB, 20 at 1 MiB, 2 at 10 MiB."""
    full = 200 if size <= 64 * KIB else 20 if size <= MIB else 2
    return max(1, full // 10) if quick else full


def text_of(size: int, seed: int) -> str:
    """`size` characters of hex, different for every task (nothing Redis could share)."""
    unit = hashlib.sha256(str(seed).encode()).hexdigest()
    return (unit * (size // len(unit) + 1))[:size]


def label(size: int) -> str:
    return f"{size // MIB} MiB" if size >= MIB else f"{size // KIB} KiB"


async def usage(bench: Bench, *keys: str) -> int:
    total = 0
    for key in keys:
        total += int(await bench.admin.memory_usage(key, samples=0) or 0)
    return total


def make_queue(bench: Bench, threshold: int) -> RedisTaskQueue:
    return RedisTaskQueue(
        queue_name=bench.queue_name,
        redis_url=bench.url,
        events=bench.events,
        blob_threshold_bytes=threshold,
        max_payload_bytes=MAX_PAYLOAD,
    )


async def engine_bytes(bench: Bench, size: int, mode: str, n: int) -> dict[str, Any]:
    """Bytes per task of `n` pending tasks with a `size`-character payload."""
    async with make_queue(bench, MODES[mode]) as queue:
        ids = [f"n-{mode}-{size}-{i}" for i in range(n)]
        batch = 50 if size <= 64 * KIB else 1
        for start in range(0, n, batch):
            specs = [
                {"task_id": tid, "task_type": TASK_TYPE, "payload": {"d": text_of(size, i)}}
                for i, tid in enumerate(ids[start : start + batch], start)
            ]
            await queue.enqueue_many(specs)
        total = 0
        for tid in ids:
            keys = queue.keys_for(tid)
            total += await usage(bench, keys.task(tid), keys.blob(tid, "payload"))
        first = queue.keys_for(ids[0]).task(ids[0])
        encoding = (await bench.admin.object("encoding", first)).decode()
        fields = await bench.admin.hlen(first)
    await clear_keys(bench.admin, bench.queue_name)
    return {"bytes_per_task": total / n, "hash_encoding": encoding, "hash_fields": fields}


async def raw_bytes(bench: Bench, size: int, n: int) -> float:
    """Bytes per key of a bare hash holding the same JSON payload."""
    keys = [bench.raw_key(f"payload:{size}:{i}") for i in range(n)]
    for i, key in enumerate(keys):
        await bench.admin.hset(key, "payload", json.dumps({"d": text_of(size, i)}))
    total = await usage(bench, *keys)
    await bench.admin.delete(*keys)
    return total / n


async def large_timings(bench: Bench) -> dict[str, float]:
    """ms of one 10 MiB enqueue and get_task (claim-check), and of raw HSET / HGET."""
    body = {"d": text_of(10 * MIB, 0)}
    async with make_queue(bench, DEFAULT_THRESHOLD) as queue:
        await queue.enqueue("n-warm", TASK_TYPE, {"d": "x"})
        t0 = time.perf_counter()
        await queue.enqueue("n-10mib", TASK_TYPE, body)
        t1 = time.perf_counter()
        task = await queue.get_task("n-10mib")
        t2 = time.perf_counter()
        if task is None or len(task.payload["d"]) != 10 * MIB:
            raise RuntimeError("the 10 MiB payload did not come back whole")
    key = bench.raw_key("payload:10mib")
    t3 = time.perf_counter()
    await bench.admin.hset(key, "payload", json.dumps(body))
    t4 = time.perf_counter()
    raw = await bench.admin.hget(key, "payload")
    json.loads(raw or b"{}")
    t5 = time.perf_counter()
    await clear_keys(bench.admin, bench.queue_name)
    return {
        "enqueue_ms": (t1 - t0) * 1e3,
        "get_task_ms": (t2 - t1) * 1e3,
        "raw_hset_ms": (t4 - t3) * 1e3,
        "raw_hget_loads_ms": (t5 - t4) * 1e3,
    }


async def scenario_n(bench: Bench) -> Row:
    quick = bench.sizes == QUICK
    sizes: dict[str, Any] = {}
    worst = 0.0
    hit = True
    for size in SIZES:
        n = tasks_of(size, quick)
        raw = await raw_bytes(bench, size, n)
        case: dict[str, Any] = {"tasks": n, "raw_hash_bytes": raw}
        for mode in MODES:
            got = await engine_bytes(bench, size, mode, n)
            got["x_payload"] = got["bytes_per_task"] / size
            got["x_raw"] = got["bytes_per_task"] / raw
            case[mode] = got
        worst = max(worst, case["claim-check"]["x_raw"])
        if size <= MIB:
            hit &= case["claim-check"]["bytes_per_task"] <= TARGET_RATIO * size + TARGET_SLACK
        sizes[label(size)] = case
    large = await large_timings(bench)
    cells = ", ".join(f"{k} {v['claim-check']['bytes_per_task']:,.0f} B" for k, v in sizes.items())
    raw_cells = ", ".join(f"{k} {v['raw_hash_bytes']:,.0f} B" for k, v in sizes.items())
    return Row(
        key="N",
        name="memory per pending task by payload size (claim-check)",
        measured=f"{cells}; 10 MiB enqueue {large['enqueue_ms']:.0f} ms,"
        f" get_task {large['get_task_ms']:.0f} ms",
        baseline=f"bare HSET {raw_cells}; HSET {large['raw_hset_ms']:.0f} ms,"
        f" HGET+loads {large['raw_hget_loads_ms']:.0f} ms",
        ratio=f"<= {worst:.2f}x",
        target=f"<= {TARGET_RATIO}x payload + {TARGET_SLACK} B to 1 MiB",
        hit=hit,
        data={"sizes": sizes, "large_10mib": large, "worst_x_raw": worst},
    )
