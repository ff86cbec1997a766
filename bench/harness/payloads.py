"""The ~100-byte task payloads, and the list and percentile helpers scenarios share."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from bench.harness.config import TASK_TYPE

PAD = "x" * 80  # {"i":n,"data":"xx..."} is 96-101 bytes of JSON


def payload(i: int) -> dict[str, Any]:
    return {"i": i, "data": PAD}


def payload_bytes(i: int) -> bytes:
    return json.dumps(payload(i), separators=(",", ":")).encode()


def task_dicts(n: int) -> list[dict[str, Any]]:
    """enqueue_many() input: n no-op tasks with uuid4().hex ids."""
    return [
        {"task_id": uuid.uuid4().hex, "task_type": TASK_TYPE, "payload": payload(i)}
        for i in range(n)
    ]


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0-100)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]
