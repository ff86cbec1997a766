"""What a pending task's score means, for readers outside the scripts.

Mirrors lua/include/common.lua (tests/test_scores.py checks the constants): score =
tick - priority * BAND_US, where tick is the server's microseconds since EPOCH_US when
the task was queued (strictly increasing per partition), so every task of a higher
priority sorts first and FIFO holds inside a priority.
"""

from __future__ import annotations

__all__ = ["BAND_US", "EPOCH_US", "band_bounds", "queued_at_us"]

EPOCH_US = 1_735_689_600_000_000  # 2025-01-01T00:00:00Z
BAND_US = 1_000_000_000_000_000


def band_bounds(priority: int) -> tuple[int, int]:
    """The scores of `priority`'s band: [low, high)."""
    low = -priority * BAND_US
    return low, low + BAND_US


def queued_at_us(score: float) -> int:
    """When a pending task was queued (or last re-queued), in microseconds since the Unix
    epoch, from its score."""
    priority = -int(score // BAND_US)
    return int(score) + priority * BAND_US + EPOCH_US
