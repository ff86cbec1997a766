"""A queue's sizes and counters, summed over its partitions."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["QueueSnapshot", "merge_snapshots"]


@dataclass(frozen=True, slots=True)
class QueueSnapshot:
    sizes: dict[str, int]  # pending, delayed, processing, completed, failed, cancelled, dlq
    pending_by_priority: dict[str, int]
    pending_by_type: dict[str, int]
    counters: dict[str, int]  # lifetime counters from the stats hash


def merge_snapshots(parts: list[QueueSnapshot]) -> QueueSnapshot:
    """One snapshot of a partitioned queue: every count summed over its partitions."""
    if len(parts) == 1:
        return parts[0]

    def total(dicts: list[dict[str, int]]) -> dict[str, int]:
        out: dict[str, int] = {}
        for d in dicts:
            for key, value in d.items():
                out[key] = out.get(key, 0) + value
        return out

    counters = total(
        [{k: v for k, v in p.counters.items() if k not in ("clock", "fence")} for p in parts]
    )
    return QueueSnapshot(
        total([p.sizes for p in parts]),
        total([p.pending_by_priority for p in parts]),
        total([p.pending_by_type for p in parts]),
        counters,
    )
