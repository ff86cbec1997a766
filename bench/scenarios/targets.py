"""What each scenario should reach; a Row's `hit` says whether it did."""

from __future__ import annotations

# Targets: A as a ratio to baseline (a), B in tasks/s, C in tasks/s, D above C, E and E0 p50
# (and E p99) in ms, F in bytes per task.
TARGET_A_RATIO = 0.8
TARGET_B_RATE = 50_000.0
TARGET_C_RATE = 10_000.0
TARGET_E_P50_MS = 1.5
TARGET_E_P99_MS = 5.0
TARGET_F_BYTES = 300.0  # issue 18
